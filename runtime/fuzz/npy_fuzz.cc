// libFuzzer harness: the .npy reader (atrous-run's --input/--expect files) on arbitrary bytes. Every input must
// end in a parsed array or a problem string: no crash, no read past the buffer, no allocation beyond its size.
#include <cstddef>
#include <cstdint>
#include <string>

#include "npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  atrous::NpyArray array;
  std::string problem;
  if (atrous::ParseNpy(reinterpret_cast<const char*>(data), size, "input", &array, &problem)) {
    size_t count = 1;
    for (int64_t d : array.shape) count *= static_cast<size_t>(d);
    if (count * atrous::ItemSize(array.dtype) != array.data.size()) __builtin_trap();  // parsed means consistent
    for (size_t i = 0; i < count && i < 64; ++i) (void)atrous::ElementAsDouble(array, i);
  } else if (problem.empty()) {
    __builtin_trap();  // a refusal always says why
  }
  return 0;
}
