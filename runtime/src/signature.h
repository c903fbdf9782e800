// The signature a model library carries as the C string `atrous_signature` (written by pipeline/signature.py):
//
//   atrous-signature 1
//   model <name>
//   target <preset>
//   device <kind> <arch>                   (optional; absent means the CPU; e.g. "device cuda sm_87")
//   input <name> <dtype> <d0>x<d1>x...     (one line per input, in call order; "scalar" for rank 0)
//   output <name> <dtype> <d0>x<d1>x...    (one line per output, in return order)
//
// Names are percent-encoded (space, %, and control characters), so every field is one whitespace-free token.
#ifndef ATROUS_SIGNATURE_H_
#define ATROUS_SIGNATURE_H_

#include <cstdint>
#include <string>
#include <vector>

namespace atrous {

struct TensorSig {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
};

struct Signature {
  std::string model;
  std::string target;
  std::string device = "cpu";  // cpu | cuda
  std::string device_arch;     // cuda: sm_XX the kernels were compiled for
  std::vector<TensorSig> inputs;
  std::vector<TensorSig> outputs;
};

// Parse `text` into `out`; false with `problem` set on malformed text.
bool ParseSignature(const std::string& text, Signature* out, std::string* problem);

}  // namespace atrous

#endif  // ATROUS_SIGNATURE_H_
