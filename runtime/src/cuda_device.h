// CUDA bring-up for models compiled for an NVIDIA GPU (see cuda_device.cc): checks the driver, the GPU and its
// architecture, then loads TVM's CUDA runtime. The runtime library links no CUDA library itself.
#ifndef ATROUS_CUDA_DEVICE_H_
#define ATROUS_CUDA_DEVICE_H_

#include <string>

namespace atrous {

// true when a GPU that can run `arch` (e.g. "sm_87") code is present and TVM's CUDA runtime is loaded;
// false with `problem` set to a sentence naming what is missing.
bool PrepareCuda(const std::string& arch, std::string* problem);

}  // namespace atrous

#endif  // ATROUS_CUDA_DEVICE_H_
