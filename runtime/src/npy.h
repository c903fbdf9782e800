// Reading and writing NumPy .npy files (format version 1.0/2.0, little-endian, C order): how the runner and the
// bundles exchange tensors with Python.
#ifndef ATROUS_NPY_H_
#define ATROUS_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

namespace atrous {

struct NpyArray {
  std::string dtype;  // numpy name: float32, int64, ...
  std::vector<int64_t> shape;
  std::vector<char> data;
};

// A .npy file's bytes: every size the header declares is checked against ``size`` before anything is allocated;
// ``label`` names the source in the problem.
bool ParseNpy(const char* bytes, size_t size, const std::string& label, NpyArray* out, std::string* problem);
bool ReadNpy(const std::string& path, NpyArray* out, std::string* problem);
bool WriteNpy(const std::string& path, const NpyArray& array, std::string* problem);
// The element as a double (for comparisons); dtype must be one ReadNpy accepts.
double ElementAsDouble(const NpyArray& array, size_t index);
size_t ItemSize(const std::string& dtype);  // 0 for dtypes .npy I/O does not support

}  // namespace atrous

#endif  // ATROUS_NPY_H_
