// Bringing up the Vulkan device for a model whose signature says "device vulkan".
//
// libatrous_runtime does not link the Vulkan backend: CPU and CUDA models never load it. For a Vulkan model it
// is opened from lib/ beside this library (RUNPATH $ORIGIN); its static initialisers register TVM's
// "device_api.vulkan" and the loader of the model's "vulkan" module. Asking it for the device first turns
// "no Vulkan loader" and "no Vulkan device" into one sentence before TVM loads anything.
#include "vulkan_device.h"

#include <dlfcn.h>
#include <tvm/ffi/function.h>

#include <exception>
#include <string>

namespace atrous {

bool PrepareVulkan(std::string* problem) {
  if (dlopen("libatrous_vulkan.so", RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    const char* why = dlerror();
    *problem = std::string("this model runs on a Vulkan GPU, but the runtime's Vulkan backend "
                           "(lib/libatrous_vulkan.so) could not be loaded: ") + (why ? why : "unknown reason");
    return false;
  }
  auto info = tvm::ffi::Function::GetGlobal("atrous.vulkan.device_info");
  if (!info) {
    *problem = "libatrous_vulkan.so loaded but registered no atrous.vulkan.device_info; rebuild the runtime";
    return false;
  }
  try {
    (*info)();
  } catch (const std::exception& err) {
    *problem = err.what();
    return false;
  }
  return true;
}

}  // namespace atrous
