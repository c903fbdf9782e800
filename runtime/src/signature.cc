#include "signature.h"

#include <cctype>
#include <sstream>

namespace atrous {
namespace {

bool Decode(const std::string& token, std::string* out) {
  out->clear();
  for (size_t i = 0; i < token.size(); ++i) {
    if (token[i] != '%') {
      out->push_back(token[i]);
      continue;
    }
    if (i + 2 >= token.size() || !std::isxdigit(static_cast<unsigned char>(token[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(token[i + 2]))) {
      return false;
    }
    out->push_back(static_cast<char>(std::stoi(token.substr(i + 1, 2), nullptr, 16)));
    i += 2;
  }
  return true;
}

bool ParseShape(const std::string& token, std::vector<int64_t>* shape) {
  shape->clear();
  if (token == "scalar") return true;
  std::istringstream in(token);
  std::string dim;
  while (std::getline(in, dim, 'x')) {
    if (dim.empty() || dim.size() > 15 || dim.find_first_not_of("0123456789") != std::string::npos) return false;
    shape->push_back(std::stoll(dim));
  }
  return !shape->empty();
}

}  // namespace

bool ParseSignature(const std::string& text, Signature* out, std::string* problem) {
  std::istringstream lines(text);
  std::string line;
  if (!std::getline(lines, line) || line != "atrous-signature 1") {
    *problem = "unknown signature version (first line: '" + line + "'); rebuild the model with this atrous";
    return false;
  }
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::string kind, name, dtype, shape, extra;
    fields >> kind >> name;
    if (kind == "device") {  // device <kind> [<arch>]: where the kernels run (absent: the CPU)
      out->device = name;
      fields >> out->device_arch;
      if (!name.empty() && !(fields >> extra)) continue;
      *problem = "malformed line '" + line + "'";
      return false;
    }
    if (kind == "model" || kind == "target") {
      if (Decode(name, kind == "model" ? &out->model : &out->target)) continue;
      *problem = "malformed line '" + line + "'";
      return false;
    }
    fields >> dtype >> shape;
    TensorSig tensor;
    if ((kind != "input" && kind != "output") || shape.empty() || (fields >> extra) ||
        !Decode(name, &tensor.name) || !ParseShape(shape, &tensor.shape)) {
      *problem = "malformed line '" + line + "'";
      return false;
    }
    tensor.dtype = dtype;
    (kind == "input" ? out->inputs : out->outputs).push_back(tensor);
  }
  if (out->outputs.empty()) {
    *problem = "the signature names no outputs";
    return false;
  }
  return true;
}

}  // namespace atrous
