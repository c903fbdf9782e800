#include "elf_check.h"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <vector>

namespace atrous {
namespace {

#if defined(__x86_64__)
constexpr int kMachine = EM_X86_64;
#elif defined(__aarch64__)
constexpr int kMachine = EM_AARCH64;
#else
constexpr int kMachine = EM_NONE;
#endif

std::string MachineName(int machine) {
  switch (machine) {
    case EM_X86_64: return "x86_64";
    case EM_AARCH64: return "aarch64";
    case EM_ARM: return "32-bit ARM";
    case EM_386: return "32-bit x86";
    case EM_RISCV: return "RISC-V";
    default: return "machine " + std::to_string(machine);
  }
}

// Whether [offset, offset + length) lies inside a file of ``size`` bytes (without overflow).
bool Inside(uint64_t offset, uint64_t length, uint64_t size) { return offset <= size && length <= size - offset; }

}  // namespace

bool CheckElf(const char* bytes, size_t available, uint64_t size, std::string* problem) {
  Elf64_Ehdr header;
  if (available > size) return *problem = "inconsistent sizes", false;
  if (available < EI_NIDENT || std::memcmp(bytes, ELFMAG, SELFMAG) != 0) {
    return *problem = "not an ELF file", false;
  }
  if (available < sizeof(header)) return *problem = "truncated ELF header (copy the file again)", false;
  std::memcpy(&header, bytes, sizeof(header));
  if (header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_ident[EI_DATA] != ELFDATA2LSB) {
    return *problem = "not a 64-bit little-endian library", false;
  }
  if (header.e_type != ET_DYN) return *problem = "not a shared library", false;
  if (kMachine != EM_NONE && header.e_machine != kMachine) {
    return *problem = "built for " + MachineName(header.e_machine) + ", this runtime runs on " +
                      MachineName(kMachine), false;
  }
  if (header.e_phentsize != sizeof(Elf64_Phdr) ||
      !Inside(header.e_phoff, uint64_t{header.e_phnum} * sizeof(Elf64_Phdr), size)) {
    return *problem = "truncated: its program headers lie past the end of the file (copy it again)", false;
  }
  if (header.e_shnum > 0 && (header.e_shentsize != sizeof(Elf64_Shdr) ||
                             !Inside(header.e_shoff, uint64_t{header.e_shnum} * sizeof(Elf64_Shdr), size))) {
    return *problem = "truncated: the file is " + std::to_string(size) + " bytes, its section headers end at " +
                      std::to_string(header.e_shoff + uint64_t{header.e_shnum} * header.e_shentsize) +
                      " (copy it again)", false;
  }
  if (!Inside(header.e_phoff, uint64_t{header.e_phnum} * sizeof(Elf64_Phdr), available)) {
    return *problem = "program headers not read", false;
  }
  for (uint16_t i = 0; i < header.e_phnum; ++i) {
    Elf64_Phdr segment;
    std::memcpy(&segment, bytes + header.e_phoff + i * sizeof(Elf64_Phdr), sizeof(segment));
    if (segment.p_type == PT_LOAD && !Inside(segment.p_offset, segment.p_filesz, size)) {
      return *problem = "truncated: the file is " + std::to_string(size) + " bytes, a segment ends at " +
                        std::to_string(segment.p_offset + segment.p_filesz) + " (copy it again)", false;
    }
  }
  return true;
}

bool CheckElfFile(const std::string& path, std::string* problem) {
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) return *problem = "cannot read it", false;
  const std::streamoff size = file.tellg();
  if (size < 0) return *problem = "cannot read it", false;
  // the ELF header, then as far as the program headers reach (they follow it in every library a linker writes)
  std::vector<char> head(static_cast<size_t>(std::min<std::streamoff>(size, 4096)));
  file.seekg(0);
  if (!file.read(head.data(), static_cast<std::streamsize>(head.size()))) return *problem = "cannot read it", false;
  Elf64_Ehdr header;
  if (head.size() >= sizeof(header)) {
    std::memcpy(&header, head.data(), sizeof(header));
    const uint64_t end = header.e_phoff + uint64_t{header.e_phnum} * sizeof(Elf64_Phdr);
    if (end > head.size() && end <= static_cast<uint64_t>(size) && end <= (64u << 20)) {
      head.resize(static_cast<size_t>(end));
      file.seekg(0);
      if (!file.read(head.data(), static_cast<std::streamsize>(end))) return *problem = "cannot read it", false;
    }
  }
  return CheckElf(head.data(), head.size(), static_cast<uint64_t>(size), problem);
}

}  // namespace atrous
