#include "npy.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

namespace atrous {
namespace {

// numpy descr <-> name, little-endian only (every target we build for is little-endian).
const std::pair<const char*, const char*> kDescr[] = {
    {"<f4", "float32"}, {"<f8", "float64"}, {"<f2", "float16"}, {"|i1", "int8"}, {"<i2", "int16"},
    {"<i4", "int32"},   {"<i8", "int64"},   {"|u1", "uint8"},   {"|b1", "bool"}};

std::string NameOf(const std::string& descr) {
  for (const auto& [d, name] : kDescr) {
    if (descr == d) return name;
  }
  return "";
}

std::string DescrOf(const std::string& name) {
  for (const auto& [d, n] : kDescr) {
    if (name == n) return d;
  }
  return "";
}

// The value of 'key' in the header dict, as raw text up to the next top-level comma or brace.
std::string Field(const std::string& header, const std::string& key) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) return "";
  at = header.find(':', at);
  if (at == std::string::npos) return "";
  size_t end = header.find(key == "shape" ? ')' : ',', at);
  if (end == std::string::npos) return "";
  return header.substr(at + 1, end - at - (key == "shape" ? 0 : 1));
}

std::string Trim(const std::string& text, const char* chars = " '\"()") {
  size_t b = text.find_first_not_of(chars), e = text.find_last_not_of(chars);
  return b == std::string::npos ? "" : text.substr(b, e - b + 1);
}

}  // namespace

size_t ItemSize(const std::string& dtype) {
  std::string descr = DescrOf(dtype);
  return descr.empty() ? 0 : static_cast<size_t>(std::stoi(descr.substr(2)));
}

namespace {

// Everything ParseNpy checks and reads but the data: where it starts in ``bytes`` and how long it is.
bool ParseHeader(const char* bytes, size_t size, const std::string& label, NpyArray* out, size_t* data_offset,
                 size_t* data_bytes, std::string* problem) {
  if (size < 10 || std::memcmp(bytes, "\x93NUMPY", 6) != 0) {
    return *problem = label + " is not a .npy file (save arrays with numpy.save)", false;
  }
  const unsigned char major = static_cast<unsigned char>(bytes[6]);
  if (major < 1 || major > 3) return *problem = label + ": unknown .npy format version", false;
  const size_t width = major == 1 ? 2 : 4;
  if (size < 8 + width) return *problem = label + ": truncated header", false;
  uint64_t header_len = 0;
  for (size_t i = width; i-- > 0;) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + i]);
  const size_t offset = 8 + width;
  if (header_len > size - offset) return *problem = label + ": truncated header", false;
  const std::string header(bytes + offset, static_cast<size_t>(header_len));
  out->dtype = NameOf(Trim(Field(header, "descr")));
  if (out->dtype.empty()) {
    return *problem = label + ": unsupported dtype " + Trim(Field(header, "descr")) +
                      " (little-endian float16/32/64, int8-64, uint8, bool)", false;
  }
  if (Trim(Field(header, "fortran_order")) != "False") {
    return *problem = label + ": Fortran-ordered array; save a C-contiguous one (numpy.ascontiguousarray)", false;
  }
  out->shape.clear();
  std::istringstream dims(Trim(Field(header, "shape")));
  std::string dim;
  uint64_t bytes_needed = ItemSize(out->dtype);
  while (std::getline(dims, dim, ',')) {
    dim = Trim(dim, " ");
    if (dim.empty()) continue;
    if (dim.find_first_not_of("0123456789") != std::string::npos || dim.size() > 12) {
      return *problem = label + ": malformed shape in the .npy header", false;
    }
    out->shape.push_back(std::stoll(dim));
    // the size the header declares is checked against the file before anything is allocated
    if (__builtin_mul_overflow(bytes_needed, static_cast<uint64_t>(out->shape.back()), &bytes_needed)) {
      return *problem = label + ": the shape in the .npy header overflows", false;
    }
  }
  const size_t body = size - offset - static_cast<size_t>(header_len);
  if (bytes_needed > body) {
    return *problem = label + ": file shorter than its shape says (" + std::to_string(bytes_needed) +
                      " bytes of data declared, " + std::to_string(body) + " present)", false;
  }
  *data_offset = offset + static_cast<size_t>(header_len);
  *data_bytes = static_cast<size_t>(bytes_needed);
  return true;
}

}  // namespace

bool ParseNpy(const char* bytes, size_t size, const std::string& label, NpyArray* out, std::string* problem) {
  size_t offset = 0, length = 0;
  if (!ParseHeader(bytes, size, label, out, &offset, &length, problem)) return false;
  out->data.assign(bytes + offset, bytes + offset + length);
  return true;
}

bool ReadNpy(const std::string& path, NpyArray* out, std::string* problem) {
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) return *problem = "cannot open " + path, false;
  const std::streamoff size = file.tellg();
  if (size < 0) return *problem = "cannot read " + path, false;
  std::vector<char> bytes(static_cast<size_t>(size));  // a file's own length bounds every allocation
  file.seekg(0);
  if (!file.read(bytes.data(), size)) return *problem = "cannot read " + path, false;
  size_t offset = 0, length = 0;
  if (!ParseHeader(bytes.data(), bytes.size(), path, out, &offset, &length, problem)) return false;
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(offset));  // the file's buffer becomes
  bytes.resize(length);                                                              // the array's: no copy
  out->data = std::move(bytes);
  return true;
}

bool WriteNpy(const std::string& path, const NpyArray& array, std::string* problem) {
  std::string descr = DescrOf(array.dtype);
  if (descr.empty()) return *problem = "cannot write dtype " + array.dtype + " to .npy", false;
  std::string shape = "(";
  for (size_t i = 0; i < array.shape.size(); ++i) shape += std::to_string(array.shape[i]) + ", ";
  if (array.shape.size() > 1) shape.resize(shape.size() - 2);
  else if (array.shape.size() == 1) shape.resize(shape.size() - 1);
  shape += ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream file(path, std::ios::binary);
  if (!file) return *problem = "cannot write " + path, false;
  uint16_t len = static_cast<uint16_t>(header.size());
  file.write("\x93NUMPY\x01\x00", 8);
  char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  file.write(len_bytes, 2);
  file << header;
  file.write(array.data.data(), static_cast<std::streamsize>(array.data.size()));
  if (!file) return *problem = "failed writing " + path, false;
  return true;
}

double ElementAsDouble(const NpyArray& a, size_t i) {
  const char* p = a.data.data() + i * ItemSize(a.dtype);
  auto get = [p](auto v) {
    std::memcpy(&v, p, sizeof(v));
    return static_cast<double>(v);
  };
  if (a.dtype == "float32") return get(float{});
  if (a.dtype == "float64") return get(double{});
  if (a.dtype == "int8") return get(int8_t{});
  if (a.dtype == "int16") return get(int16_t{});
  if (a.dtype == "int32") return get(int32_t{});
  if (a.dtype == "int64") return get(int64_t{});
  if (a.dtype == "uint8" || a.dtype == "bool") return get(uint8_t{});
  if (a.dtype == "float16") {
    uint16_t h;
    std::memcpy(&h, p, 2);
    int exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    double v = exp == 0 ? mant / 1024.0 / 16384.0 : exp == 31 ? (mant ? NAN : INFINITY)
                                                      : (1 + mant / 1024.0) * std::ldexp(1.0, exp - 15);
    return (h & 0x8000) ? -v : v;
  }
  return NAN;
}

}  // namespace atrous
