// The Vulkan instance, the devices it offers and, per device, memory and command submission.
//
// Work is recorded into one command buffer per device ("batch") and submitted only when the host needs a result
// (StreamSync, a copy through host memory, freeing a buffer still in use) or when the batch is large, so that a
// model's many small kernels cost one submission instead of one each. Every recorded command is preceded by a
// global memory barrier: kernels and copies run in order, as TVM expects of one stream.
#ifndef ATROUS_VULKAN_CONTEXT_H_
#define ATROUS_VULKAN_CONTEXT_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "vulkan_loader.h"

namespace atrous {
namespace vulkan {

// Optional shader features; each is enabled on the device when the device supports it.
struct Features {
  bool int64 = false;
  bool float64 = false;
  bool int16 = false;
  bool float16 = false;
  bool int8 = false;
  bool storage_buffer16 = false;
  bool storage_buffer8 = false;
};

// What AllocDataSpace hands to TVM as the tensor's data pointer; kernels receive it back as an argument.
struct Buffer {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  VkDeviceSize size = 0;
  int device_id = 0;
  uint64_t last_use = 0;  // serial of the last batch that references it
};

// A compiled kernel as the device needs it to record a dispatch.
struct DispatchInfo {
  VkPipeline pipeline;
  VkPipelineLayout layout;
  VkDescriptorSetLayout set_layout;
  const std::vector<Buffer*>* buffers;  // bindings 0..n-1
  const void* push_constants;
  uint32_t push_constant_size;
  uint32_t grid[3];
};

class Device {
 public:
  Device(const InstanceFunctions& ifns, VkPhysicalDevice physical, uint32_t queue_family, int device_id);
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  Buffer* Allocate(size_t nbytes);
  void Free(Buffer* buffer);
  void CopyToDevice(const void* host, Buffer* dst, size_t dst_offset, size_t nbytes);
  void CopyFromDevice(Buffer* src, size_t src_offset, void* host, size_t nbytes);
  void CopyOnDevice(Buffer* src, size_t src_offset, Buffer* dst, size_t dst_offset, size_t nbytes);
  void Dispatch(const DispatchInfo& info);
  // Submits what is recorded and waits until the device finished all of it.
  void Sync();

  VkDevice handle() const { return device_; }
  const DeviceFunctions& fns() const { return fns_; }
  const VkPhysicalDeviceProperties& properties() const { return properties_; }
  const Features& features() const { return features_; }
  uint64_t device_local_bytes() const;
  // One line for logs and tests: name, versions, compute limits, shaderInt64, the float16 features.
  std::string Describe() const;

 private:
  struct DescriptorPool {
    VkDescriptorPool pool;
    uint32_t sets_left;
    uint32_t descriptors_left;
  };
  struct Batch {
    VkCommandBuffer commands = VK_NULL_HANDLE;
    VkFence fence = VK_NULL_HANDLE;
    std::vector<DescriptorPool> pools;
    uint64_t serial = 0;
    uint32_t recorded = 0;
  };

  void CreateDevice(const InstanceFunctions& ifns);
  VkDeviceMemory AllocateMemory(const VkMemoryRequirements& needs, bool host_visible);
  Batch& Recording();
  void Barrier(VkCommandBuffer commands, VkPipelineStageFlags dst_stage, VkAccessFlags dst_access);
  VkDescriptorSet AllocateSet(Batch& batch, VkDescriptorSetLayout layout, uint32_t descriptors);
  void Recycle(DescriptorPool pool);
  void Submit();
  // Retires finished batches; with wait_for > 0 blocks until every batch up to that serial finished.
  void Retire(uint64_t wait_for);
  void EnsureStaging(VkDeviceSize nbytes);
  void WaitUntilIdle();

  int device_id_;
  VkPhysicalDevice physical_;
  uint32_t queue_family_;
  VkPhysicalDeviceProperties properties_{};
  VkPhysicalDeviceMemoryProperties memory_{};
  Features features_;
  VkDevice device_ = VK_NULL_HANDLE;
  DeviceFunctions fns_;
  VkQueue queue_ = VK_NULL_HANDLE;
  VkCommandPool command_pool_ = VK_NULL_HANDLE;

  std::mutex mutex_;
  std::unique_ptr<Batch> current_;
  std::deque<Batch> in_flight_;
  std::vector<Batch> idle_batches_;
  std::vector<DescriptorPool> idle_pools_;
  uint64_t next_serial_ = 1;
  uint64_t completed_serial_ = 0;

  // Host-visible buffer for copies between host and device memory; it is idle whenever no copy is running.
  Buffer staging_;
  void* staging_map_ = nullptr;
};

// The process's Vulkan instance and the devices usable for compute (never destroyed: drivers' own exit handlers
// may run before static destructors, so tearing down at exit crashes more often than it helps).
class Context {
 public:
  // Throws the "no Vulkan loader" / "no Vulkan device" error, the same one on every call.
  static Context& Global();
  // The device TVM calls vulkan(device_id): index into the devices with a compute queue (ATROUS_VULKAN_DEVICE
  // filters them by name). Throws if there is no such device.
  Device& GetDevice(int device_id);
  int device_count() const { return static_cast<int>(candidates_.size()); }

 private:
  Context();
  struct Candidate {
    VkPhysicalDevice physical;
    uint32_t queue_family;
    std::string name;
  };

  InstanceFunctions fns_;
  VkInstance instance_ = VK_NULL_HANDLE;
  std::vector<Candidate> candidates_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<Device>> devices_;
};

// The device TVM last selected on this thread (DeviceAPI::SetDevice); kernels without buffer arguments run there.
int& ThreadDevice();

// Looks up a pointer TVM passed as a buffer argument or copy endpoint; throws if it is not one of ours.
Buffer* AsBuffer(const void* handle, const char* what);

}  // namespace vulkan
}  // namespace atrous

#endif  // ATROUS_VULKAN_CONTEXT_H_
