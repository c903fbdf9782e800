// Vulkan entry points, resolved at run time from the system's Vulkan loader (libvulkan.so.1).
//
// The library never links libvulkan: the same binary must load on boards without any Vulkan driver (where CPU and
// CUDA models still run) and it must cross-compile for architectures whose libvulkan is not installed on the build
// machine. Everything is compiled with VK_NO_PROTOTYPES and called through these tables instead.
#ifndef ATROUS_VULKAN_LOADER_H_
#define ATROUS_VULKAN_LOADER_H_

#include <vulkan/vulkan.h>

#include <string>

namespace atrous {
namespace vulkan {

// Functions reached through vkGetInstanceProcAddr(NULL, ...) before an instance exists.
#define ATROUS_VK_GLOBAL_FUNCTIONS(X) \
  X(vkCreateInstance)                 \
  X(vkEnumerateInstanceVersion)

#define ATROUS_VK_INSTANCE_FUNCTIONS(X)       \
  X(vkDestroyInstance)                        \
  X(vkEnumeratePhysicalDevices)               \
  X(vkGetPhysicalDeviceProperties)            \
  X(vkGetPhysicalDeviceQueueFamilyProperties) \
  X(vkGetPhysicalDeviceMemoryProperties)      \
  X(vkGetPhysicalDeviceFeatures2)             \
  X(vkEnumerateDeviceExtensionProperties)     \
  X(vkCreateDevice)                           \
  X(vkGetDeviceProcAddr)

#define ATROUS_VK_DEVICE_FUNCTIONS(X) \
  X(vkGetDeviceQueue)                 \
  X(vkCreateBuffer)                   \
  X(vkDestroyBuffer)                  \
  X(vkGetBufferMemoryRequirements)    \
  X(vkAllocateMemory)                 \
  X(vkFreeMemory)                     \
  X(vkBindBufferMemory)               \
  X(vkMapMemory)                      \
  X(vkCreateCommandPool)              \
  X(vkAllocateCommandBuffers)         \
  X(vkBeginCommandBuffer)             \
  X(vkEndCommandBuffer)               \
  X(vkCmdPipelineBarrier)             \
  X(vkCmdCopyBuffer)                  \
  X(vkCmdBindPipeline)                \
  X(vkCmdBindDescriptorSets)          \
  X(vkCmdPushConstants)               \
  X(vkCmdDispatch)                    \
  X(vkQueueSubmit)                    \
  X(vkCreateFence)                    \
  X(vkResetFences)                    \
  X(vkWaitForFences)                  \
  X(vkGetFenceStatus)                 \
  X(vkCreateDescriptorPool)           \
  X(vkResetDescriptorPool)            \
  X(vkAllocateDescriptorSets)         \
  X(vkUpdateDescriptorSets)           \
  X(vkCreateDescriptorSetLayout)      \
  X(vkDestroyDescriptorSetLayout)     \
  X(vkCreatePipelineLayout)           \
  X(vkDestroyPipelineLayout)          \
  X(vkCreateShaderModule)             \
  X(vkDestroyShaderModule)            \
  X(vkCreateComputePipelines)         \
  X(vkDestroyPipeline)

#define ATROUS_VK_DECLARE(name) PFN_##name name = nullptr;

struct InstanceFunctions {
  ATROUS_VK_GLOBAL_FUNCTIONS(ATROUS_VK_DECLARE)
  ATROUS_VK_INSTANCE_FUNCTIONS(ATROUS_VK_DECLARE)
};

struct DeviceFunctions {
  ATROUS_VK_DEVICE_FUNCTIONS(ATROUS_VK_DECLARE)
};

#undef ATROUS_VK_DECLARE

// Opens libvulkan.so.1 once per process; returns its vkGetInstanceProcAddr, or nullptr with *problem set.
PFN_vkGetInstanceProcAddr OpenLoader(std::string* problem);

// Fills the global functions (instance == VK_NULL_HANDLE) or the instance functions; throws if one is missing.
void LoadGlobalFunctions(PFN_vkGetInstanceProcAddr get, InstanceFunctions* fns);
void LoadInstanceFunctions(PFN_vkGetInstanceProcAddr get, VkInstance instance, InstanceFunctions* fns);
void LoadDeviceFunctions(PFN_vkGetDeviceProcAddr get, VkDevice device, DeviceFunctions* fns);

// "VK_ERROR_OUT_OF_DEVICE_MEMORY" etc., for error messages.
std::string ResultName(VkResult result);

}  // namespace vulkan
}  // namespace atrous

// Throws a RuntimeError naming the failed call and its result code; `what` says what was being done.
#define ATROUS_VK_CALL(call, what)                                                                   \
  do {                                                                                               \
    VkResult atrous_vk_result_ = (call);                                                             \
    if (atrous_vk_result_ != VK_SUCCESS) {                                                           \
      TVM_FFI_THROW(RuntimeError) << "Vulkan: " << (what) << " failed ("                             \
                                  << ::atrous::vulkan::ResultName(atrous_vk_result_) << " from " \
                                  << #call << ")";                                                   \
    }                                                                                                \
  } while (0)

#endif  // ATROUS_VULKAN_LOADER_H_
