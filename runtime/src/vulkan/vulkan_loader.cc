#include "vulkan_loader.h"

#include <dlfcn.h>
#include <tvm/ffi/error.h>

#include <mutex>

namespace atrous {
namespace vulkan {

PFN_vkGetInstanceProcAddr OpenLoader(std::string* problem) {
  // The loader is never closed: drivers start threads and register atexit handlers that must outlive us.
  static std::once_flag once;
  static PFN_vkGetInstanceProcAddr get = nullptr;
  static std::string error;
  std::call_once(once, [] {
    void* lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* why = dlerror();
      error = "no Vulkan loader (libvulkan.so.1) on this machine; install it: sudo apt-get install libvulkan1 "
              "mesa-vulkan-drivers (lavapipe, a CPU Vulkan device) or the GPU vendor's Vulkan driver";
      if (why != nullptr) error += std::string(" (") + why + ")";
      return;
    }
    get = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib, "vkGetInstanceProcAddr"));
    if (get == nullptr) {
      error = "libvulkan.so.1 on this machine has no vkGetInstanceProcAddr; it is not a usable Vulkan loader, "
              "reinstall it: sudo apt-get install --reinstall libvulkan1";
    }
  });
  if (get == nullptr) *problem = error;
  return get;
}

namespace {

template <typename F>
void Resolve(F* slot, PFN_vkVoidFunction fn, const char* name) {
  if (fn == nullptr) {
    TVM_FFI_THROW(RuntimeError) << "the Vulkan loader or driver lacks " << name
                                << ", which Vulkan 1.1 requires; update the Vulkan driver";
  }
  *slot = reinterpret_cast<F>(fn);
}

}  // namespace

void LoadGlobalFunctions(PFN_vkGetInstanceProcAddr get, InstanceFunctions* fns) {
  // vkEnumerateInstanceVersion is missing only from Vulkan 1.0 loaders, which cannot run 1.1 shaders anyway.
#define ATROUS_VK_RESOLVE(name) Resolve(&fns->name, get(VK_NULL_HANDLE, #name), #name);
  ATROUS_VK_GLOBAL_FUNCTIONS(ATROUS_VK_RESOLVE)
#undef ATROUS_VK_RESOLVE
}

void LoadInstanceFunctions(PFN_vkGetInstanceProcAddr get, VkInstance instance, InstanceFunctions* fns) {
#define ATROUS_VK_RESOLVE(name) Resolve(&fns->name, get(instance, #name), #name);
  ATROUS_VK_INSTANCE_FUNCTIONS(ATROUS_VK_RESOLVE)
#undef ATROUS_VK_RESOLVE
}

void LoadDeviceFunctions(PFN_vkGetDeviceProcAddr get, VkDevice device, DeviceFunctions* fns) {
  // Device-level pointers skip the loader's dispatch trampoline on every command.
#define ATROUS_VK_RESOLVE(name) Resolve(&fns->name, get(device, #name), #name);
  ATROUS_VK_DEVICE_FUNCTIONS(ATROUS_VK_RESOLVE)
#undef ATROUS_VK_RESOLVE
}

std::string ResultName(VkResult result) {
  switch (result) {
#define ATROUS_VK_RESULT(name) \
  case name:                   \
    return #name;
    ATROUS_VK_RESULT(VK_NOT_READY)
    ATROUS_VK_RESULT(VK_TIMEOUT)
    ATROUS_VK_RESULT(VK_INCOMPLETE)
    ATROUS_VK_RESULT(VK_ERROR_OUT_OF_HOST_MEMORY)
    ATROUS_VK_RESULT(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    ATROUS_VK_RESULT(VK_ERROR_INITIALIZATION_FAILED)
    ATROUS_VK_RESULT(VK_ERROR_DEVICE_LOST)
    ATROUS_VK_RESULT(VK_ERROR_MEMORY_MAP_FAILED)
    ATROUS_VK_RESULT(VK_ERROR_LAYER_NOT_PRESENT)
    ATROUS_VK_RESULT(VK_ERROR_EXTENSION_NOT_PRESENT)
    ATROUS_VK_RESULT(VK_ERROR_FEATURE_NOT_PRESENT)
    ATROUS_VK_RESULT(VK_ERROR_INCOMPATIBLE_DRIVER)
    ATROUS_VK_RESULT(VK_ERROR_TOO_MANY_OBJECTS)
    ATROUS_VK_RESULT(VK_ERROR_FORMAT_NOT_SUPPORTED)
    ATROUS_VK_RESULT(VK_ERROR_FRAGMENTED_POOL)
    ATROUS_VK_RESULT(VK_ERROR_OUT_OF_POOL_MEMORY)
    ATROUS_VK_RESULT(VK_ERROR_INVALID_SHADER_NV)
#undef ATROUS_VK_RESULT
    default:
      return "VkResult " + std::to_string(static_cast<int>(result));
  }
}

}  // namespace vulkan
}  // namespace atrous
