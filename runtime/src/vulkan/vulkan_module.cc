// The module of kind "vulkan": the kernels of one compiled model, launched through the Vulkan device.
//
// Creating or loading the module only parses the payload, so compiling and exporting work on machines without
// Vulkan. A kernel's pipeline is built on its first launch on a device and cached for the module's lifetime.
#include <tvm/ffi/cast.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>

#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "vulkan_context.h"
#include "vulkan_payload.h"

namespace atrous {
namespace vulkan {
namespace {

namespace ffi = tvm::ffi;

const char* const kLaunchTags[] = {"blockIdx.x", "blockIdx.y", "blockIdx.z", "threadIdx.x", "threadIdx.y",
                                   "threadIdx.z"};

// SPIR-V capabilities that depend on optional device features, with the feature's Vulkan name.
struct OptionalCapability {
  uint32_t capability;
  bool Features::*supported;
  const char* feature;
};
const OptionalCapability kOptionalCapabilities[] = {
    {11, &Features::int64, "shaderInt64"},                          // Int64
    {10, &Features::float64, "shaderFloat64"},                      // Float64
    {22, &Features::int16, "shaderInt16"},                          // Int16
    {9, &Features::float16, "shaderFloat16"},                       // Float16
    {39, &Features::int8, "shaderInt8"},                            // Int8
    {4433, &Features::storage_buffer16, "storageBuffer16BitAccess"},  // StorageBuffer16BitAccess
    {4448, &Features::storage_buffer8, "storageBuffer8BitAccess"},    // StorageBuffer8BitAccess
};

// Drivers reject shaders using an unsupported capability with a bare VK_ERROR_*; say which feature is missing.
void CheckCapabilities(const std::string& kernel, const std::vector<uint32_t>& spirv, const Device& device) {
  constexpr uint32_t kOpCapability = 17;
  // The capabilities are the first instructions after the 5-word header.
  for (size_t at = 5; at < spirv.size();) {
    uint32_t words = spirv[at] >> 16, opcode = spirv[at] & 0xffff;
    if (opcode != kOpCapability || words < 2 || at + 1 >= spirv.size()) break;
    for (const OptionalCapability& c : kOptionalCapabilities) {
      if (spirv[at + 1] == c.capability && !(device.features().*c.supported)) {
        TVM_FFI_THROW(RuntimeError) << "kernel '" << kernel << "' needs the Vulkan feature " << c.feature
                                    << ", which device '" << device.properties().deviceName
                                    << "' lacks; compile the model for this device's Vulkan target";
      }
    }
    at += words;
  }
}

// Compiled host code passes a buffer as the data pointer AllocDataSpace returned; a direct call from Python
// passes the tensor itself.
Buffer* BufferArg(const std::string& kernel, size_t i, ffi::AnyView arg) {
  const std::string what = "kernel '" + kernel + "' argument " + std::to_string(i);
  void* handle = nullptr;
  if (auto tensor = arg.try_cast<DLTensor*>(); tensor && arg.type_index() != ffi::TypeIndex::kTVMFFIOpaquePtr) {
    if ((*tensor)->byte_offset != 0) {
      TVM_FFI_THROW(ValueError) << what << " is a tensor view with a byte offset, which kernels cannot take; "
                                << "pass a tensor that starts at its allocation";
    }
    handle = (*tensor)->data;
  } else if (auto pointer = arg.try_cast<void*>()) {
    handle = *pointer;
  } else {
    TVM_FFI_THROW(TypeError) << what << " should be a Vulkan buffer but is " << arg.GetTypeKey();
  }
  if (handle == nullptr) TVM_FFI_THROW(ValueError) << what << " is a null buffer";
  return AsBuffer(handle, what.c_str());
}

class VulkanModuleObj final : public ffi::ModuleObj {
 public:
  explicit VulkanModuleObj(ffi::Bytes payload) : payload_(std::move(payload)), kernels_(ParsePayload(payload_)) {}

  ~VulkanModuleObj() {
    // Pending work may still use the pipelines; the devices themselves live for the whole process.
    std::set<Device*> devices;
    for (auto& entry : pipelines_) devices.insert(entry.second.device);
    try {
      for (Device* device : devices) device->Sync();
    } catch (const ffi::Error&) {
      return;  // the device is lost: leaking the pipelines is all that is left to do, and a destructor cannot throw
    }
    for (auto& entry : pipelines_) Destroy(entry.second);
  }

  const char* kind() const final { return "vulkan"; }
  int GetPropertyMask() const final { return ffi::Module::kBinarySerializable | ffi::Module::kRunnable; }
  ffi::Bytes SaveToBytes() const final { return payload_; }

  ffi::Optional<ffi::Function> GetFunction(const ffi::String& name) final {
    auto it = kernels_.find(std::string(name));
    if (it == kernels_.end()) return std::nullopt;
    // The closure holds the module so that its pipelines outlive every copy of the function.
    ffi::ObjectPtr<VulkanModuleObj> self = ffi::GetObjectPtr<VulkanModuleObj>(this);
    const std::string* kernel = &it->first;
    const KernelInfo* info = &it->second;
    return ffi::Function::FromPacked(
        [self, kernel, info](ffi::PackedArgs args, ffi::Any*) { self->Launch(*kernel, *info, args); });
  }

 private:
  struct Pipeline {
    Device* device = nullptr;
    VkShaderModule shader = VK_NULL_HANDLE;
    VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
    VkPipelineLayout layout = VK_NULL_HANDLE;
    VkPipeline pipeline = VK_NULL_HANDLE;
  };

  void Launch(const std::string& kernel, const KernelInfo& info, ffi::PackedArgs args) {
    const size_t expected = info.args.size() + info.launch.size();
    if (static_cast<size_t>(args.size()) != expected) {
      TVM_FFI_THROW(TypeError) << "kernel '" << kernel << "' takes " << expected << " arguments ("
                               << info.args.size() << " buffers and scalars, " << info.launch.size()
                               << " launch extents) but got " << args.size();
    }
    std::vector<Buffer*> buffers;
    buffers.reserve(info.num_buffers);
    uint32_t push[128 / 4 + 1] = {};  // Vulkan guarantees only 128 bytes of push constants; larger is rejected below
    std::vector<uint32_t> large_push;
    uint32_t* constants = push;
    if (info.push_constant_size > sizeof(push)) {
      large_push.resize(info.push_constant_size / 4);
      constants = large_push.data();
    }
    char* bytes = reinterpret_cast<char*>(constants);
    for (size_t i = 0; i < info.args.size(); ++i) {
      const ArgSpec& spec = info.args[i];
      auto bad = [&](const char* expected_type) {
        TVM_FFI_THROW(TypeError) << "kernel '" << kernel << "' argument " << i << " should be " << expected_type
                                 << " but is " << args[i].GetTypeKey();
      };
      switch (spec.kind) {
        case ArgKind::kBuffer: {
          buffers.push_back(BufferArg(kernel, i, args[i]));
          break;
        }
        case ArgKind::kInt32:
        case ArgKind::kInt64: {
          auto value = args[i].try_cast<int64_t>();  // TVM passes every integer as int64
          if (!value) bad("an integer");
          if (spec.kind == ArgKind::kInt32) {
            int32_t narrow = static_cast<int32_t>(*value);
            std::memcpy(bytes + spec.location, &narrow, 4);
          } else {
            std::memcpy(bytes + spec.location, &*value, 8);
          }
          break;
        }
        case ArgKind::kFloat32:
        case ArgKind::kFloat64: {
          auto value = args[i].try_cast<double>();  // TVM passes every float as double
          if (!value) bad("a float");
          if (spec.kind == ArgKind::kFloat32) {
            float narrow = static_cast<float>(*value);
            std::memcpy(bytes + spec.location, &narrow, 4);
          } else {
            std::memcpy(bytes + spec.location, &*value, 8);
          }
          break;
        }
      }
    }

    int device_id = buffers.empty() ? ThreadDevice() : buffers[0]->device_id;
    for (Buffer* buffer : buffers) {
      if (buffer->device_id != device_id) {
        TVM_FFI_THROW(ValueError) << "kernel '" << kernel << "' got buffers of vulkan(" << device_id
                                  << ") and vulkan(" << buffer->device_id << "); all must be on one device";
      }
    }
    Device& device = Context::Global().GetDevice(device_id);

    DispatchInfo dispatch{};
    dispatch.grid[0] = dispatch.grid[1] = dispatch.grid[2] = 1;
    for (size_t j = 0; j < info.launch.size(); ++j) {
      const ffi::AnyView extent_arg = args[info.args.size() + j];
      auto extent = extent_arg.try_cast<int64_t>();
      int dim = info.launch[j];
      if (!extent || *extent < 0) {
        TVM_FFI_THROW(TypeError) << "kernel '" << kernel << "' launch extent " << kLaunchTags[dim]
                                 << " should be a non-negative integer";
      }
      if (dim >= kThreadX) {
        if (static_cast<uint64_t>(*extent) != info.local_size[dim - kThreadX]) {
          TVM_FFI_THROW(ValueError) << "kernel '" << kernel << "' was launched with " << kLaunchTags[dim] << " = "
                                    << *extent << " but its shader's workgroup size is "
                                    << info.local_size[dim - kThreadX]
                                    << "; the thread extent must be the one the kernel was compiled with";
        }
        continue;
      }
      uint32_t limit = device.properties().limits.maxComputeWorkGroupCount[dim];
      if (static_cast<uint64_t>(*extent) > limit) {
        TVM_FFI_THROW(ValueError) << "kernel '" << kernel << "' needs " << *extent << " workgroups along "
                                  << kLaunchTags[dim] << " but device '" << device.properties().deviceName
                                  << "' allows at most " << limit << "; split the work or use a larger block size";
      }
      dispatch.grid[dim] = static_cast<uint32_t>(*extent);
    }
    // An empty grid (an empty tensor) has nothing to run.
    if (dispatch.grid[0] == 0 || dispatch.grid[1] == 0 || dispatch.grid[2] == 0) return;

    const Pipeline& pipeline = GetPipeline(kernel, info, device, device_id);
    dispatch.pipeline = pipeline.pipeline;
    dispatch.layout = pipeline.layout;
    dispatch.set_layout = pipeline.set_layout;
    dispatch.buffers = &buffers;
    dispatch.push_constants = constants;
    dispatch.push_constant_size = info.push_constant_size;
    device.Dispatch(dispatch);
  }

  const Pipeline& GetPipeline(const std::string& kernel, const KernelInfo& info, Device& device, int device_id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto key = std::make_pair(device_id, kernel);
    auto it = pipelines_.find(key);
    if (it != pipelines_.end()) return it->second;
    Pipeline pipeline = CreatePipeline(kernel, info, device);
    return pipelines_.emplace(key, pipeline).first->second;
  }

  static Pipeline CreatePipeline(const std::string& kernel, const KernelInfo& info, Device& device) {
    const VkPhysicalDeviceLimits& limits = device.properties().limits;
    const std::string on = "kernel '" + kernel + "' on device '" + device.properties().deviceName + "'";
    CheckCapabilities(kernel, info.spirv, device);
    if (info.push_constant_size > limits.maxPushConstantsSize) {
      TVM_FFI_THROW(RuntimeError) << on << " needs " << info.push_constant_size
                                  << " bytes of push constants; the device allows " << limits.maxPushConstantsSize;
    }
    if (info.num_buffers > limits.maxPerStageDescriptorStorageBuffers) {
      TVM_FFI_THROW(RuntimeError) << on << " takes " << info.num_buffers << " buffers; the device allows "
                                  << limits.maxPerStageDescriptorStorageBuffers << " per kernel";
    }
    uint64_t invocations = uint64_t(info.local_size[0]) * info.local_size[1] * info.local_size[2];
    for (int i = 0; i < 3; ++i) {
      if (info.local_size[i] > limits.maxComputeWorkGroupSize[i] || invocations > limits.maxComputeWorkGroupInvocations) {
        TVM_FFI_THROW(RuntimeError) << on << " has workgroup size [" << info.local_size[0] << ", "
                                    << info.local_size[1] << ", " << info.local_size[2] << "]; the device allows ["
                                    << limits.maxComputeWorkGroupSize[0] << ", " << limits.maxComputeWorkGroupSize[1]
                                    << ", " << limits.maxComputeWorkGroupSize[2] << "] and "
                                    << limits.maxComputeWorkGroupInvocations
                                    << " threads in all; compile the model for this device's target";
      }
    }

    const DeviceFunctions& vk = device.fns();
    VkDevice handle = device.handle();
    Pipeline p;
    p.device = &device;
    try {
      VkShaderModuleCreateInfo shader{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
      shader.codeSize = info.spirv.size() * 4;
      shader.pCode = info.spirv.data();
      ATROUS_VK_CALL(vk.vkCreateShaderModule(handle, &shader, nullptr, &p.shader), "loading the SPIR-V of " + on);

      std::vector<VkDescriptorSetLayoutBinding> bindings(info.num_buffers);
      for (uint32_t b = 0; b < info.num_buffers; ++b) {
        bindings[b] = {b, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
      }
      VkDescriptorSetLayoutCreateInfo set{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
      set.bindingCount = info.num_buffers;
      set.pBindings = bindings.data();
      ATROUS_VK_CALL(vk.vkCreateDescriptorSetLayout(handle, &set, nullptr, &p.set_layout),
                     "creating the descriptor set layout of " + on);

      VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, info.push_constant_size};
      VkPipelineLayoutCreateInfo layout{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
      layout.setLayoutCount = 1;
      layout.pSetLayouts = &p.set_layout;
      layout.pushConstantRangeCount = info.push_constant_size > 0 ? 1 : 0;
      layout.pPushConstantRanges = &range;
      ATROUS_VK_CALL(vk.vkCreatePipelineLayout(handle, &layout, nullptr, &p.layout),
                     "creating the pipeline layout of " + on);

      VkComputePipelineCreateInfo compute{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
      compute.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
      compute.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
      compute.stage.module = p.shader;
      compute.stage.pName = info.entry.c_str();
      compute.layout = p.layout;
      ATROUS_VK_CALL(vk.vkCreateComputePipelines(handle, VK_NULL_HANDLE, 1, &compute, nullptr, &p.pipeline),
                     "compiling the pipeline of " + on);
    } catch (...) {
      Destroy(p);
      throw;
    }
    return p;
  }

  static void Destroy(const Pipeline& p) {
    const DeviceFunctions& vk = p.device->fns();
    VkDevice handle = p.device->handle();
    if (p.pipeline) vk.vkDestroyPipeline(handle, p.pipeline, nullptr);
    if (p.layout) vk.vkDestroyPipelineLayout(handle, p.layout, nullptr);
    if (p.set_layout) vk.vkDestroyDescriptorSetLayout(handle, p.set_layout, nullptr);
    if (p.shader) vk.vkDestroyShaderModule(handle, p.shader, nullptr);
  }

  ffi::Bytes payload_;
  std::map<std::string, KernelInfo> kernels_;
  std::mutex mutex_;
  std::map<std::pair<int, std::string>, Pipeline> pipelines_;
};

ffi::Module CreateModule(ffi::Bytes payload) {
  return ffi::Module(ffi::make_object<VulkanModuleObj>(std::move(payload)));
}

}  // namespace

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      // Used by the compiler: validates the payload without touching Vulkan.
      .def("atrous.vulkan.module_create", CreateModule)
      // Used by tvm.runtime.load_module for the "vulkan" module inside an exported library.
      .def("ffi.Module.load_from_bytes.vulkan", CreateModule)
      .def("atrous.vulkan.device_info", []() { return Context::Global().GetDevice(0).Describe(); });
}

}  // namespace vulkan
}  // namespace atrous
