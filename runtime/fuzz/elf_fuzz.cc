// libFuzzer harness: the ELF check atrous_load runs on a model library before dlopen maps it.
#include <cstddef>
#include <cstdint>
#include <string>

#include "elf_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string problem;
  if (!atrous::CheckElf(reinterpret_cast<const char*>(data), size, size, &problem) && problem.empty()) {
    __builtin_trap();  // a refusal always says why
  }
  return 0;
}
