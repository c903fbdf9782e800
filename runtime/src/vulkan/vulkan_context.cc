#include "vulkan_context.h"

#include <tvm/ffi/error.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <unordered_set>

namespace atrous {
namespace vulkan {
namespace {

constexpr char kInstallDriver[] =
    "install a Vulkan driver: sudo apt-get install mesa-vulkan-drivers (lavapipe, a CPU Vulkan device) or the GPU "
    "vendor's Vulkan driver";
// Submit without waiting after this many commands, so that the device starts on long sequences early and a batch's
// descriptor pools stay small.
constexpr uint32_t kMaxBatchCommands = 256;
constexpr uint32_t kPoolSets = kMaxBatchCommands;
constexpr uint32_t kPoolDescriptors = kMaxBatchCommands * 8;
// Larger host<->device copies go through the staging buffer in pieces of this size.
constexpr VkDeviceSize kMaxStagingBytes = VkDeviceSize(64) << 20;

// Every live Buffer, so that a stray pointer given as a kernel argument is an error message and not a crash.
std::mutex live_mutex;
std::unordered_set<const Buffer*> live_buffers;

std::string VersionString(uint32_t v) {
  return std::to_string(VK_API_VERSION_MAJOR(v)) + "." + std::to_string(VK_API_VERSION_MINOR(v)) + "." +
         std::to_string(VK_API_VERSION_PATCH(v));
}

std::string DriverVersionString(const VkPhysicalDeviceProperties& p) {
  // NVIDIA packs its driver version as 10.8.8.6 bits instead of the API-version layout.
  if (p.vendorID == 0x10DE) {
    uint32_t v = p.driverVersion;
    return std::to_string((v >> 22) & 0x3ff) + "." + std::to_string((v >> 14) & 0xff) + "." +
           std::to_string((v >> 6) & 0xff);
  }
  return VersionString(p.driverVersion);
}

bool HasExtension(const std::vector<VkExtensionProperties>& extensions, const char* name) {
  return std::any_of(extensions.begin(), extensions.end(),
                     [name](const VkExtensionProperties& e) { return std::strcmp(e.extensionName, name) == 0; });
}

}  // namespace

int& ThreadDevice() {
  thread_local int device_id = 0;
  return device_id;
}

Buffer* AsBuffer(const void* handle, const char* what) {
  std::lock_guard<std::mutex> lock(live_mutex);
  auto it = live_buffers.find(static_cast<const Buffer*>(handle));
  if (it == live_buffers.end()) {
    TVM_FFI_THROW(ValueError) << what << " is not a live Vulkan buffer (got " << handle
                              << "); pass tensors allocated on tvm.vulkan(), not host or freed memory";
  }
  return const_cast<Buffer*>(*it);
}

// ---------------------------------------------------------------------------------------------------------------
// Context

Context& Context::Global() {
  static std::mutex mutex;
  static Context* context = nullptr;
  static std::string failure;
  std::lock_guard<std::mutex> lock(mutex);
  if (context == nullptr && failure.empty()) {
    try {
      context = new Context();
    } catch (const tvm::ffi::Error& e) {
      failure = e.message();
    }
  }
  if (context == nullptr) TVM_FFI_THROW(RuntimeError) << failure;
  return *context;
}

Context::Context() {
  std::string problem;
  PFN_vkGetInstanceProcAddr get = OpenLoader(&problem);
  if (get == nullptr) TVM_FFI_THROW(RuntimeError) << problem;
  LoadGlobalFunctions(get, &fns_);
  uint32_t loader_version = 0;
  fns_.vkEnumerateInstanceVersion(&loader_version);
  if (loader_version < VK_API_VERSION_1_1) {
    TVM_FFI_THROW(RuntimeError) << "the Vulkan loader here supports only Vulkan " << VersionString(loader_version)
                                << "; Atrous kernels need Vulkan 1.1; update libvulkan1 and the driver";
  }

  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "atrous";
  app.pEngineName = "atrous";
  app.apiVersion = VK_API_VERSION_1_1;
  VkInstanceCreateInfo info{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  info.pApplicationInfo = &app;
  VkResult result = fns_.vkCreateInstance(&info, nullptr, &instance_);
  if (result == VK_ERROR_INCOMPATIBLE_DRIVER) {
    TVM_FFI_THROW(RuntimeError) << "the Vulkan loader found no driver (VK_ERROR_INCOMPATIBLE_DRIVER); "
                                << kInstallDriver;
  }
  ATROUS_VK_CALL(result, "creating the Vulkan instance");
  LoadInstanceFunctions(get, instance_, &fns_);

  uint32_t count = 0;
  ATROUS_VK_CALL(fns_.vkEnumeratePhysicalDevices(instance_, &count, nullptr), "listing Vulkan devices");
  std::vector<VkPhysicalDevice> physicals(count);
  ATROUS_VK_CALL(fns_.vkEnumeratePhysicalDevices(instance_, &count, physicals.data()), "listing Vulkan devices");
  physicals.resize(count);

  const char* wanted = std::getenv("ATROUS_VULKAN_DEVICE");
  std::string seen;
  for (VkPhysicalDevice physical : physicals) {
    VkPhysicalDeviceProperties props;
    fns_.vkGetPhysicalDeviceProperties(physical, &props);
    seen += seen.empty() ? "" : ", ";
    seen += std::string("'") + props.deviceName + "'";
    uint32_t families = 0;
    fns_.vkGetPhysicalDeviceQueueFamilyProperties(physical, &families, nullptr);
    std::vector<VkQueueFamilyProperties> family_props(families);
    fns_.vkGetPhysicalDeviceQueueFamilyProperties(physical, &families, family_props.data());
    for (uint32_t i = 0; i < families; ++i) {
      if ((family_props[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && family_props[i].queueCount > 0) {
        if (wanted == nullptr || std::strstr(props.deviceName, wanted) != nullptr) {
          candidates_.push_back({physical, i, props.deviceName});
        }
        break;
      }
    }
  }
  if (candidates_.empty() && wanted != nullptr && *wanted != '\0') {
    TVM_FFI_THROW(RuntimeError) << "no Vulkan device with a compute queue has a name containing '" << wanted
                                << "' (ATROUS_VULKAN_DEVICE); devices here: " << (seen.empty() ? "none" : seen)
                                << "; unset ATROUS_VULKAN_DEVICE or set it to part of one of these names";
  }
  if (candidates_.empty()) {
    TVM_FFI_THROW(RuntimeError) << "no Vulkan device with a compute queue on this machine (the Vulkan loader found "
                                << count << " device(s)" << (seen.empty() ? "" : ": " + seen) << "); "
                                << kInstallDriver;
  }
  devices_.resize(candidates_.size());
}

Device& Context::GetDevice(int device_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (device_id < 0 || device_id >= device_count()) {
    std::ostringstream names;
    for (size_t i = 0; i < candidates_.size(); ++i) names << (i ? ", " : "") << i << ": " << candidates_[i].name;
    TVM_FFI_THROW(IndexError) << "vulkan(" << device_id << ") does not exist; this machine has " << device_count()
                              << " Vulkan compute device(s) (" << names.str() << ")";
  }
  if (!devices_[device_id]) {
    const Candidate& c = candidates_[device_id];
    devices_[device_id] = std::make_unique<Device>(fns_, c.physical, c.queue_family, device_id);
  }
  return *devices_[device_id];
}

// ---------------------------------------------------------------------------------------------------------------
// Device: creation

Device::Device(const InstanceFunctions& ifns, VkPhysicalDevice physical, uint32_t queue_family, int device_id)
    : device_id_(device_id), physical_(physical), queue_family_(queue_family) {
  ifns.vkGetPhysicalDeviceProperties(physical_, &properties_);
  ifns.vkGetPhysicalDeviceMemoryProperties(physical_, &memory_);
  if (properties_.apiVersion < VK_API_VERSION_1_1) {
    TVM_FFI_THROW(RuntimeError) << "Vulkan device '" << properties_.deviceName << "' supports only Vulkan "
                                << VersionString(properties_.apiVersion)
                                << "; Atrous kernels need Vulkan 1.1; update its driver";
  }
  CreateDevice(ifns);
  fns_.vkGetDeviceQueue(device_, queue_family_, 0, &queue_);
  VkCommandPoolCreateInfo pool{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pool.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pool.queueFamilyIndex = queue_family_;
  ATROUS_VK_CALL(fns_.vkCreateCommandPool(device_, &pool, nullptr, &command_pool_), "creating a command pool");
}

void Device::CreateDevice(const InstanceFunctions& ifns) {
  uint32_t count = 0;
  ifns.vkEnumerateDeviceExtensionProperties(physical_, nullptr, &count, nullptr);
  std::vector<VkExtensionProperties> extensions(count);
  ifns.vkEnumerateDeviceExtensionProperties(physical_, nullptr, &count, extensions.data());
  extensions.resize(count);
  // float16/int8 arithmetic and 8-bit storage are core only from Vulkan 1.2; at 1.1 they are extensions.
  bool has_float16_int8 = HasExtension(extensions, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
  bool has_8bit_storage = HasExtension(extensions, VK_KHR_8BIT_STORAGE_EXTENSION_NAME);

  // Query what is supported, then enable only the features kernels may use.
  VkPhysicalDevice16BitStorageFeatures storage16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  VkPhysicalDeviceShaderFloat16Int8FeaturesKHR float16_int8{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES_KHR};
  VkPhysicalDevice8BitStorageFeaturesKHR storage8{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES_KHR};
  VkPhysicalDeviceFeatures2 supported{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  supported.pNext = &storage16;
  void** tail = &storage16.pNext;
  if (has_float16_int8) {
    *tail = &float16_int8;
    tail = &float16_int8.pNext;
  }
  if (has_8bit_storage) *tail = &storage8;
  ifns.vkGetPhysicalDeviceFeatures2(physical_, &supported);

  features_.int64 = supported.features.shaderInt64;
  features_.float64 = supported.features.shaderFloat64;
  features_.int16 = supported.features.shaderInt16;
  features_.storage_buffer16 = storage16.storageBuffer16BitAccess;
  features_.float16 = has_float16_int8 && float16_int8.shaderFloat16;
  features_.int8 = has_float16_int8 && float16_int8.shaderInt8;
  features_.storage_buffer8 = has_8bit_storage && storage8.storageBuffer8BitAccess;

  VkPhysicalDevice16BitStorageFeatures enable16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  enable16.storageBuffer16BitAccess = features_.storage_buffer16;
  VkPhysicalDeviceShaderFloat16Int8FeaturesKHR enable_f16_i8{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES_KHR};
  enable_f16_i8.shaderFloat16 = features_.float16;
  enable_f16_i8.shaderInt8 = features_.int8;
  VkPhysicalDevice8BitStorageFeaturesKHR enable8{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES_KHR};
  enable8.storageBuffer8BitAccess = features_.storage_buffer8;
  VkPhysicalDeviceFeatures2 enable{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  enable.features.shaderInt64 = features_.int64;
  enable.features.shaderFloat64 = features_.float64;
  enable.features.shaderInt16 = features_.int16;
  enable.pNext = &enable16;
  std::vector<const char*> enabled_extensions;
  tail = &enable16.pNext;
  if (has_float16_int8) {
    enabled_extensions.push_back(VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
    *tail = &enable_f16_i8;
    tail = &enable_f16_i8.pNext;
  }
  if (has_8bit_storage) {
    enabled_extensions.push_back(VK_KHR_8BIT_STORAGE_EXTENSION_NAME);
    *tail = &enable8;
  }

  float priority = 1.0f;
  VkDeviceQueueCreateInfo queue{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  queue.queueFamilyIndex = queue_family_;
  queue.queueCount = 1;
  queue.pQueuePriorities = &priority;
  VkDeviceCreateInfo info{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  info.pNext = &enable;  // features go through VkPhysicalDeviceFeatures2, so pEnabledFeatures stays null
  info.queueCreateInfoCount = 1;
  info.pQueueCreateInfos = &queue;
  info.enabledExtensionCount = static_cast<uint32_t>(enabled_extensions.size());
  info.ppEnabledExtensionNames = enabled_extensions.data();
  ATROUS_VK_CALL(ifns.vkCreateDevice(physical_, &info, nullptr, &device_),
                 std::string("opening Vulkan device '") + properties_.deviceName + "'");
  LoadDeviceFunctions(ifns.vkGetDeviceProcAddr, device_, &fns_);
}

uint64_t Device::device_local_bytes() const {
  uint64_t total = 0;
  for (uint32_t i = 0; i < memory_.memoryHeapCount; ++i) {
    if (memory_.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) total += memory_.memoryHeaps[i].size;
  }
  return total;
}

std::string Device::Describe() const {
  const VkPhysicalDeviceLimits& limits = properties_.limits;
  std::ostringstream os;
  // the type tells a real GPU from a CPU implementation (lavapipe), whose timings are not GPU numbers
  const char* type = properties_.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU              ? "cpu"
                     : properties_.deviceType == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU ? "integrated-gpu"
                     : properties_.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU   ? "discrete-gpu"
                     : properties_.deviceType == VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU    ? "virtual-gpu"
                                                                                        : "other";
  os << "name=" << properties_.deviceName << "; type=" << type << "; api=" << VersionString(properties_.apiVersion)
     << "; driver=" << DriverVersionString(properties_) << "; maxComputeWorkGroupInvocations="
     << limits.maxComputeWorkGroupInvocations << "; maxComputeSharedMemorySize="
     << limits.maxComputeSharedMemorySize << "; shaderInt64=" << (features_.int64 ? 1 : 0)
     << "; shaderFloat16=" << (features_.float16 ? 1 : 0)
     << "; storageBuffer16BitAccess=" << (features_.storage_buffer16 ? 1 : 0);
  return os.str();
}

// ---------------------------------------------------------------------------------------------------------------
// Device: memory

VkDeviceMemory Device::AllocateMemory(const VkMemoryRequirements& needs, bool host_visible) {
  // Preference order: for device buffers device-local memory, then any; for staging host-visible coherent
  // memory, cached first (reading back uncached memory is very slow on CPUs).
  const VkMemoryPropertyFlags coherent = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  std::vector<VkMemoryPropertyFlags> preferences;
  if (host_visible) {
    preferences = {coherent | VK_MEMORY_PROPERTY_HOST_CACHED_BIT, coherent};
  } else {
    preferences = {VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0};
  }
  VkResult last = VK_ERROR_OUT_OF_DEVICE_MEMORY;
  for (VkMemoryPropertyFlags wanted : preferences) {
    for (uint32_t i = 0; i < memory_.memoryTypeCount; ++i) {
      if (!(needs.memoryTypeBits & (1u << i)) || (memory_.memoryTypes[i].propertyFlags & wanted) != wanted) continue;
      VkMemoryAllocateInfo info{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
      info.allocationSize = needs.size;
      info.memoryTypeIndex = i;
      VkDeviceMemory memory = VK_NULL_HANDLE;
      last = fns_.vkAllocateMemory(device_, &info, nullptr, &memory);
      if (last == VK_SUCCESS) return memory;
    }
  }
  TVM_FFI_THROW(RuntimeError) << "Vulkan device '" << properties_.deviceName << "' could not allocate "
                              << needs.size << " bytes of " << (host_visible ? "host-visible" : "device")
                              << " memory (" << ResultName(last) << "); free tensors or use a smaller model";
}

Buffer* Device::Allocate(size_t nbytes) {
  // Vulkan forbids zero-sized buffers, but TVM allocates empty tensors.
  VkBufferCreateInfo info{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  info.size = std::max<VkDeviceSize>(nbytes, 4);
  info.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
               VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  auto buffer = std::make_unique<Buffer>();
  buffer->size = info.size;
  buffer->device_id = device_id_;
  ATROUS_VK_CALL(fns_.vkCreateBuffer(device_, &info, nullptr, &buffer->buffer), "creating a buffer");
  VkMemoryRequirements needs;
  fns_.vkGetBufferMemoryRequirements(device_, buffer->buffer, &needs);
  try {
    buffer->memory = AllocateMemory(needs, false);
  } catch (...) {
    fns_.vkDestroyBuffer(device_, buffer->buffer, nullptr);
    throw;
  }
  ATROUS_VK_CALL(fns_.vkBindBufferMemory(device_, buffer->buffer, buffer->memory, 0), "binding buffer memory");
  std::lock_guard<std::mutex> lock(live_mutex);
  live_buffers.insert(buffer.get());
  return buffer.release();
}

void Device::Free(Buffer* buffer) {
  {
    std::lock_guard<std::mutex> lock(live_mutex);
    live_buffers.erase(buffer);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  // A kernel recorded or running may still read or write it.
  if (buffer->last_use > completed_serial_) {
    if (current_ && current_->serial == buffer->last_use) Submit();
    Retire(buffer->last_use);
  }
  fns_.vkDestroyBuffer(device_, buffer->buffer, nullptr);
  fns_.vkFreeMemory(device_, buffer->memory, nullptr);
  delete buffer;
}

void Device::EnsureStaging(VkDeviceSize nbytes) {
  if (staging_.size >= nbytes) return;
  if (staging_.buffer != VK_NULL_HANDLE) {
    fns_.vkDestroyBuffer(device_, staging_.buffer, nullptr);
    fns_.vkFreeMemory(device_, staging_.memory, nullptr);  // also unmaps
    staging_ = Buffer();
    staging_map_ = nullptr;
  }
  VkBufferCreateInfo info{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  // Grow geometrically so that a sequence of slightly larger copies does not reallocate each time.
  info.size = std::min(std::max<VkDeviceSize>(nbytes, VkDeviceSize(1) << 20), kMaxStagingBytes);
  info.size = std::max(info.size, nbytes);
  info.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  ATROUS_VK_CALL(fns_.vkCreateBuffer(device_, &info, nullptr, &staging_.buffer), "creating the staging buffer");
  VkMemoryRequirements needs;
  fns_.vkGetBufferMemoryRequirements(device_, staging_.buffer, &needs);
  staging_.memory = AllocateMemory(needs, true);
  staging_.size = info.size;
  ATROUS_VK_CALL(fns_.vkBindBufferMemory(device_, staging_.buffer, staging_.memory, 0), "binding staging memory");
  ATROUS_VK_CALL(fns_.vkMapMemory(device_, staging_.memory, 0, VK_WHOLE_SIZE, 0, &staging_map_),
                 "mapping the staging buffer");
}

// ---------------------------------------------------------------------------------------------------------------
// Device: recording and submission

Device::Batch& Device::Recording() {
  if (current_) return *current_;
  Retire(0);  // recycles command buffers, fences and descriptor pools of batches that finished meanwhile
  current_ = std::make_unique<Batch>();
  if (!idle_batches_.empty()) {
    *current_ = std::move(idle_batches_.back());
    idle_batches_.pop_back();
  } else {
    VkCommandBufferAllocateInfo alloc{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    alloc.commandPool = command_pool_;
    alloc.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    alloc.commandBufferCount = 1;
    ATROUS_VK_CALL(fns_.vkAllocateCommandBuffers(device_, &alloc, &current_->commands),
                   "allocating a command buffer");
    VkFenceCreateInfo fence{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    ATROUS_VK_CALL(fns_.vkCreateFence(device_, &fence, nullptr, &current_->fence), "creating a fence");
  }
  current_->serial = next_serial_++;
  current_->recorded = 0;
  VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  ATROUS_VK_CALL(fns_.vkBeginCommandBuffer(current_->commands, &begin), "recording commands");
  return *current_;
}

void Device::Barrier(VkCommandBuffer commands, VkPipelineStageFlags dst_stage, VkAccessFlags dst_access) {
  // Orders this command after everything earlier on the queue, including earlier submissions, so that batches
  // submitted back to back without waiting still see each other's writes.
  VkMemoryBarrier barrier{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  barrier.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_HOST_WRITE_BIT;
  barrier.dstAccessMask = dst_access;
  fns_.vkCmdPipelineBarrier(commands,
                            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT |
                                VK_PIPELINE_STAGE_HOST_BIT,
                            dst_stage, 0, 1, &barrier, 0, nullptr, 0, nullptr);
}

void Device::Submit() {
  if (!current_) return;
  Batch batch = std::move(*current_);
  current_.reset();
  ATROUS_VK_CALL(fns_.vkEndCommandBuffer(batch.commands), "finishing a command buffer");
  VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  submit.commandBufferCount = 1;
  submit.pCommandBuffers = &batch.commands;
  VkResult result = fns_.vkQueueSubmit(queue_, 1, &submit, batch.fence);
  if (result != VK_SUCCESS) {
    // Its fence will never signal: recycle it now so that later waits do not hang, then report.
    for (DescriptorPool& pool : batch.pools) Recycle(pool);
    batch.pools.clear();
    idle_batches_.push_back(std::move(batch));
    ATROUS_VK_CALL(result, "submitting work to the device");
  }
  in_flight_.push_back(std::move(batch));
}

void Device::Recycle(DescriptorPool pool) {
  ATROUS_VK_CALL(fns_.vkResetDescriptorPool(device_, pool.pool, 0), "resetting a descriptor pool");
  pool.sets_left = kPoolSets;
  pool.descriptors_left = kPoolDescriptors;
  idle_pools_.push_back(pool);
}

void Device::Retire(uint64_t wait_for) {
  while (!in_flight_.empty()) {
    Batch& batch = in_flight_.front();
    if (batch.serial <= wait_for) {
      ATROUS_VK_CALL(fns_.vkWaitForFences(device_, 1, &batch.fence, VK_TRUE, UINT64_MAX),
                     "waiting for the device (a kernel may have crashed or hung the GPU)");
    } else if (fns_.vkGetFenceStatus(device_, batch.fence) != VK_SUCCESS) {
      break;
    }
    ATROUS_VK_CALL(fns_.vkResetFences(device_, 1, &batch.fence), "resetting a fence");
    for (DescriptorPool& pool : batch.pools) Recycle(pool);
    batch.pools.clear();
    completed_serial_ = batch.serial;
    idle_batches_.push_back(std::move(batch));
    in_flight_.pop_front();
  }
  // A serial whose batch never got commands (or was never submitted) is complete by definition.
  if (in_flight_.empty() && !current_) completed_serial_ = next_serial_ - 1;
}

void Device::WaitUntilIdle() {
  Submit();
  Retire(next_serial_);
}

void Device::Sync() {
  std::lock_guard<std::mutex> lock(mutex_);
  WaitUntilIdle();
}

VkDescriptorSet Device::AllocateSet(Batch& batch, VkDescriptorSetLayout layout, uint32_t descriptors) {
  if (batch.pools.empty() || batch.pools.back().sets_left == 0 || batch.pools.back().descriptors_left < descriptors) {
    if (!idle_pools_.empty()) {
      batch.pools.push_back(idle_pools_.back());
      idle_pools_.pop_back();
    } else {
      VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kPoolDescriptors};
      VkDescriptorPoolCreateInfo info{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
      info.maxSets = kPoolSets;
      info.poolSizeCount = 1;
      info.pPoolSizes = &size;
      VkDescriptorPool pool;
      ATROUS_VK_CALL(fns_.vkCreateDescriptorPool(device_, &info, nullptr, &pool), "creating a descriptor pool");
      batch.pools.push_back({pool, kPoolSets, kPoolDescriptors});
    }
  }
  DescriptorPool& pool = batch.pools.back();
  VkDescriptorSetAllocateInfo info{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
  info.descriptorPool = pool.pool;
  info.descriptorSetCount = 1;
  info.pSetLayouts = &layout;
  VkDescriptorSet set;
  ATROUS_VK_CALL(fns_.vkAllocateDescriptorSets(device_, &info, &set), "allocating a descriptor set");
  pool.sets_left -= 1;
  pool.descriptors_left -= descriptors;
  return set;
}

void Device::Dispatch(const DispatchInfo& d) {
  std::lock_guard<std::mutex> lock(mutex_);
  Batch& batch = Recording();
  const std::vector<Buffer*>& buffers = *d.buffers;
  if (!buffers.empty()) {
    VkDescriptorSet set = AllocateSet(batch, d.set_layout, static_cast<uint32_t>(buffers.size()));
    std::vector<VkDescriptorBufferInfo> infos(buffers.size());
    std::vector<VkWriteDescriptorSet> writes(buffers.size());
    for (size_t i = 0; i < buffers.size(); ++i) {
      infos[i] = {buffers[i]->buffer, 0, VK_WHOLE_SIZE};
      writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
      writes[i].dstSet = set;
      writes[i].dstBinding = static_cast<uint32_t>(i);
      writes[i].descriptorCount = 1;
      writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      writes[i].pBufferInfo = &infos[i];
      buffers[i]->last_use = batch.serial;
    }
    fns_.vkUpdateDescriptorSets(device_, static_cast<uint32_t>(writes.size()), writes.data(), 0, nullptr);
    fns_.vkCmdBindDescriptorSets(batch.commands, VK_PIPELINE_BIND_POINT_COMPUTE, d.layout, 0, 1, &set, 0, nullptr);
  }
  Barrier(batch.commands, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
          VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
  fns_.vkCmdBindPipeline(batch.commands, VK_PIPELINE_BIND_POINT_COMPUTE, d.pipeline);
  if (d.push_constant_size > 0) {
    fns_.vkCmdPushConstants(batch.commands, d.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, d.push_constant_size,
                            d.push_constants);
  }
  fns_.vkCmdDispatch(batch.commands, d.grid[0], d.grid[1], d.grid[2]);
  if (++batch.recorded >= kMaxBatchCommands) Submit();
}

// ---------------------------------------------------------------------------------------------------------------
// Device: copies

void Device::CopyOnDevice(Buffer* src, size_t src_offset, Buffer* dst, size_t dst_offset, size_t nbytes) {
  if (nbytes == 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  // Stays in the batch: the result is only observable through another command or a sync, both ordered after it.
  Batch& batch = Recording();
  Barrier(batch.commands, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT);
  VkBufferCopy region{src_offset, dst_offset, nbytes};
  fns_.vkCmdCopyBuffer(batch.commands, src->buffer, dst->buffer, 1, &region);
  src->last_use = dst->last_use = batch.serial;
  if (++batch.recorded >= kMaxBatchCommands) Submit();
}

void Device::CopyToDevice(const void* host, Buffer* dst, size_t dst_offset, size_t nbytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (size_t done = 0; done < nbytes;) {
    EnsureStaging(std::min<VkDeviceSize>(nbytes - done, kMaxStagingBytes));
    size_t piece = std::min<size_t>(nbytes - done, staging_.size);
    std::memcpy(staging_map_, static_cast<const char*>(host) + done, piece);
    Batch& batch = Recording();
    Barrier(batch.commands, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT);
    VkBufferCopy region{0, dst_offset + done, piece};
    fns_.vkCmdCopyBuffer(batch.commands, staging_.buffer, dst->buffer, 1, &region);
    ++batch.recorded;
    // The staging buffer is reused for the next piece and the next copy.
    WaitUntilIdle();
    done += piece;
  }
}

void Device::CopyFromDevice(Buffer* src, size_t src_offset, void* host, size_t nbytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (size_t done = 0; done < nbytes;) {
    EnsureStaging(std::min<VkDeviceSize>(nbytes - done, kMaxStagingBytes));
    size_t piece = std::min<size_t>(nbytes - done, staging_.size);
    Batch& batch = Recording();
    Barrier(batch.commands, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
    VkBufferCopy region{src_offset + done, 0, piece};
    fns_.vkCmdCopyBuffer(batch.commands, src->buffer, staging_.buffer, 1, &region);
    VkMemoryBarrier to_host{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    to_host.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    to_host.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    fns_.vkCmdPipelineBarrier(batch.commands, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1,
                              &to_host, 0, nullptr, 0, nullptr);
    ++batch.recorded;
    WaitUntilIdle();
    std::memcpy(static_cast<char*>(host) + done, staging_map_, piece);
    done += piece;
  }
}

}  // namespace vulkan
}  // namespace atrous
