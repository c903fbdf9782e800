// A model library checked as a file before dlopen maps it: an ELF shared object for this machine whose segments
// and section headers lie inside the file. dlopen of a truncated library maps pages past the end of the file,
// and the first touch of one kills the process with SIGBUS; a check of the headers turns that into a message.
#ifndef ATROUS_ELF_CHECK_H_
#define ATROUS_ELF_CHECK_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace atrous {

// ``bytes`` holds the first ``available`` bytes of a file of ``size`` bytes (at least through its program
// headers; all of it when fuzzed).
bool CheckElf(const char* bytes, size_t available, uint64_t size, std::string* problem);
// The same for a file on disk (reads its headers only).
bool CheckElfFile(const std::string& path, std::string* problem);

}  // namespace atrous

#endif  // ATROUS_ELF_CHECK_H_
