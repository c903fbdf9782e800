// libFuzzer harness: the signature a model library carries (atrous_signature), as the C API reads it.
#include <cstddef>
#include <cstdint>
#include <string>

#include "signature.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  atrous::Signature signature;
  std::string problem;
  if (!atrous::ParseSignature(std::string(reinterpret_cast<const char*>(data), size), &signature, &problem) &&
      problem.empty()) {
    __builtin_trap();  // a refusal always says why
  }
  return 0;
}
