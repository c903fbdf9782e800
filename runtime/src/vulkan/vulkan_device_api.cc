// TVM's DeviceAPI for kDLVulkan: what tvm.vulkan(i), tensor allocation, copies and the Relax VM go through.
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/runtime/device_api.h>

#include <string>

#include "vulkan_context.h"

namespace atrous {
namespace vulkan {
namespace {

using tvm::Device;
using tvm::runtime::DeviceAttrKind;

Buffer* CheckRange(const void* handle, size_t offset, size_t nbytes, const char* what) {
  Buffer* buffer = AsBuffer(handle, what);
  if (offset > buffer->size || nbytes > buffer->size - offset) {
    TVM_FFI_THROW(IndexError) << "copy of " << nbytes << " bytes at offset " << offset << " runs past the end of "
                              << what << " (" << buffer->size << " bytes)";
  }
  return buffer;
}

class VulkanDeviceAPI final : public tvm::runtime::DeviceAPI {
 public:
  static VulkanDeviceAPI* Global() {
    static VulkanDeviceAPI* api = new VulkanDeviceAPI();  // TVM keeps the raw pointer for the process's lifetime
    return api;
  }

  void SetDevice(Device dev) final { ThreadDevice() = dev.device_id; }

  void GetAttr(Device dev, DeviceAttrKind kind, tvm::ffi::Any* rv) final {
    if (kind == tvm::runtime::kExist) {
      // Asking whether a device exists must not fail, whatever is missing on this machine.
      try {
        *rv = dev.device_id >= 0 && dev.device_id < Context::Global().device_count() ? 1 : 0;
      } catch (const tvm::ffi::Error&) {
        *rv = 0;
      }
      return;
    }
    const vulkan::Device& device = Context::Global().GetDevice(dev.device_id);
    const VkPhysicalDeviceProperties& props = device.properties();
    const VkPhysicalDeviceLimits& limits = props.limits;
    switch (kind) {
      case tvm::runtime::kMaxThreadsPerBlock:
        *rv = static_cast<int64_t>(limits.maxComputeWorkGroupInvocations);
        break;
      case tvm::runtime::kWarpSize:
        // Subgroup sizes vary per pipeline in Vulkan; 1 keeps TVM from assuming warp-synchronous execution.
        *rv = static_cast<int64_t>(1);
        break;
      case tvm::runtime::kMaxSharedMemoryPerBlock:
        *rv = static_cast<int64_t>(limits.maxComputeSharedMemorySize);
        break;
      case tvm::runtime::kComputeVersion:
        *rv = std::to_string(VK_API_VERSION_MAJOR(props.apiVersion)) + "." +
              std::to_string(VK_API_VERSION_MINOR(props.apiVersion));
        break;
      case tvm::runtime::kDeviceName:
        *rv = std::string(props.deviceName);
        break;
      case tvm::runtime::kMaxThreadDimensions:
        // A JSON list, which tvm.runtime.Device.max_thread_dimensions parses.
        *rv = "[" + std::to_string(limits.maxComputeWorkGroupSize[0]) + ", " +
              std::to_string(limits.maxComputeWorkGroupSize[1]) + ", " +
              std::to_string(limits.maxComputeWorkGroupSize[2]) + "]";
        break;
      case tvm::runtime::kApiVersion:
        *rv = static_cast<int64_t>(VK_HEADER_VERSION);  // the headers this library was built with, as in TVM
        break;
      case tvm::runtime::kDriverVersion:
        *rv = static_cast<int64_t>(props.driverVersion);
        break;
      case tvm::runtime::kTotalGlobalMemory:
        *rv = static_cast<int64_t>(device.device_local_bytes());
        break;
      default:
        break;  // unknown to Vulkan: leave rv unset (None)
    }
  }

  void* AllocDataSpace(Device dev, size_t nbytes, size_t, DLDataType) final {
    return Context::Global().GetDevice(dev.device_id).Allocate(nbytes);
  }

  void FreeDataSpace(Device, void* ptr) final {
    Buffer* buffer = AsBuffer(ptr, "the tensor to free");
    Context::Global().GetDevice(buffer->device_id).Free(buffer);
  }

  void StreamSync(Device dev, TVMStreamHandle) final { Context::Global().GetDevice(dev.device_id).Sync(); }

 protected:
  void CopyDataFromTo(const void* from, size_t from_offset, void* to, size_t to_offset, size_t nbytes,
                      Device dev_from, Device dev_to, DLDataType, TVMStreamHandle) final {
    const bool from_vk = dev_from.device_type == kDLVulkan, to_vk = dev_to.device_type == kDLVulkan;
    if (from_vk && to_vk) {
      Buffer* src = CheckRange(from, from_offset, nbytes, "the copy source");
      Buffer* dst = CheckRange(to, to_offset, nbytes, "the copy destination");
      if (src->device_id != dst->device_id) {
        TVM_FFI_THROW(ValueError) << "copying between vulkan(" << src->device_id << ") and vulkan("
                                  << dst->device_id << ") directly is not supported; copy through the host";
      }
      Context::Global().GetDevice(src->device_id).CopyOnDevice(src, from_offset, dst, to_offset, nbytes);
    } else if (from_vk && dev_to.device_type == kDLCPU) {
      Buffer* src = CheckRange(from, from_offset, nbytes, "the copy source");
      Context::Global().GetDevice(src->device_id)
          .CopyFromDevice(src, from_offset, static_cast<char*>(to) + to_offset, nbytes);
    } else if (to_vk && dev_from.device_type == kDLCPU) {
      Buffer* dst = CheckRange(to, to_offset, nbytes, "the copy destination");
      Context::Global().GetDevice(dst->device_id)
          .CopyToDevice(static_cast<const char*>(from) + from_offset, dst, to_offset, nbytes);
    } else {
      TVM_FFI_THROW(ValueError) << "the Vulkan runtime copies only between Vulkan and CPU memory, not from device "
                                << "type " << dev_from.device_type << " to " << dev_to.device_type;
    }
  }
};

}  // namespace

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef().def_packed("device_api.vulkan", [](tvm::ffi::PackedArgs, tvm::ffi::Any* rv) {
    *rv = static_cast<void*>(VulkanDeviceAPI::Global());
  });
}

}  // namespace vulkan
}  // namespace atrous
