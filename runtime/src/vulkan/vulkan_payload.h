// The "vulkan" module's payload: what the Atrous shader code generator emits and what export_library stores.
//
//   b"ATRSVK01" | uint32 little-endian N | N bytes of UTF-8 JSON header | blob area (SPIR-V of every kernel)
//
// The header maps each kernel name to where its SPIR-V lies in the blob area, how TVM's call arguments (buffers,
// scalars, launch extents) map to descriptor bindings and push constants, and the workgroup size baked into the
// shader. Parsing validates everything once, so that a bad payload fails when the module is created or loaded,
// with the reason, instead of at some kernel launch.
#ifndef ATROUS_VULKAN_PAYLOAD_H_
#define ATROUS_VULKAN_PAYLOAD_H_

#include <tvm/ffi/string.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace atrous {
namespace vulkan {

enum class ArgKind { kBuffer, kInt32, kInt64, kFloat32, kFloat64 };

struct ArgSpec {
  ArgKind kind;
  uint32_t location;  // descriptor binding of a buffer, byte offset in the push constants of a scalar
};

// Indices 0-2: blockIdx.x/y/z, 3-5: threadIdx.x/y/z.
enum LaunchDim : int { kBlockX = 0, kThreadX = 3 };

struct KernelInfo {
  std::vector<uint32_t> spirv;
  std::string entry;
  std::vector<ArgSpec> args;
  uint32_t num_buffers = 0;
  uint32_t push_constant_size = 0;
  std::vector<int> launch;  // LaunchDim index of each trailing launch-extent argument
  uint32_t local_size[3] = {1, 1, 1};
};

// Kernel name -> description. Throws ValueError ("invalid Atrous Vulkan payload: ...") on anything malformed.
std::map<std::string, KernelInfo> ParsePayload(const tvm::ffi::Bytes& payload);

}  // namespace vulkan
}  // namespace atrous

#endif  // ATROUS_VULKAN_PAYLOAD_H_
