#include "vulkan_payload.h"

#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/json.h>

#include <cstring>

namespace atrous {
namespace vulkan {
namespace {

namespace json = tvm::ffi::json;
using tvm::ffi::Any;
using tvm::ffi::String;

constexpr char kMagic[8] = {'A', 'T', 'R', 'S', 'V', 'K', '0', '1'};
constexpr uint32_t kSpirvMagic = 0x07230203;

// Every error names the payload, the kernel and the field, so that a code generator bug is easy to place.
[[noreturn]] void Fail(const std::string& where, const std::string& what) {
  TVM_FFI_THROW(ValueError) << "invalid Atrous Vulkan payload: " << (where.empty() ? "" : where + ": ") << what
                            << " (rebuild the model with the matching Atrous compiler)";
}

json::Object Object(const Any& value, const std::string& where) {
  auto object = value.as<json::Object>();
  if (!object) Fail(where, "expected a JSON object");
  return *object;
}

json::Array Array(const Any& value, const std::string& where) {
  auto array = value.as<json::Array>();
  if (!array) Fail(where, "expected a JSON array");
  return *array;
}

Any Field(const json::Object& object, const char* key, const std::string& where) {
  auto value = object.Get(String(key));
  if (!value) Fail(where, std::string("missing \"") + key + "\"");
  return *value;
}

int64_t Integer(const Any& value, const std::string& where, int64_t min, int64_t max) {
  auto number = value.as<int64_t>();
  if (!number) Fail(where, "expected an integer");
  if (*number < min || *number > max) {
    Fail(where, std::to_string(*number) + " is out of range [" + std::to_string(min) + ", " + std::to_string(max) +
                    "]");
  }
  return *number;
}

std::string Text(const Any& value, const std::string& where) {
  auto text = value.as<String>();
  if (!text) Fail(where, "expected a string");
  return std::string(*text);
}

int LaunchIndex(const std::string& tag, const std::string& where) {
  static const char* const kTags[] = {"blockIdx.x",  "blockIdx.y",  "blockIdx.z",
                                      "threadIdx.x", "threadIdx.y", "threadIdx.z"};
  for (int i = 0; i < 6; ++i) {
    if (tag == kTags[i]) return i;
  }
  Fail(where, "unsupported launch tag '" + tag + "' (known: blockIdx.x/y/z, threadIdx.x/y/z)");
}

KernelInfo ParseKernel(const std::string& name, const json::Object& spec, const char* blobs, size_t blob_size) {
  const std::string where = "kernel '" + name + "'";
  KernelInfo info;

  json::Array spirv = Array(Field(spec, "spirv", where), where + " \"spirv\"");
  if (spirv.size() != 2) Fail(where, "\"spirv\" must be [offset, size]");
  int64_t offset = Integer(spirv[0], where + " spirv offset", 0, static_cast<int64_t>(blob_size));
  int64_t size = Integer(spirv[1], where + " spirv size", 20, static_cast<int64_t>(blob_size) - offset);
  if (size % 4 != 0) Fail(where, "SPIR-V size " + std::to_string(size) + " is not a multiple of 4");
  info.spirv.resize(size / 4);
  std::memcpy(info.spirv.data(), blobs + offset, size);  // copied: the blob area has no alignment guarantee
  if (info.spirv[0] != kSpirvMagic) Fail(where, "its SPIR-V does not start with the SPIR-V magic number");

  info.entry = Text(Field(spec, "entry", where), where + " \"entry\"");

  info.push_constant_size =
      static_cast<uint32_t>(Integer(Field(spec, "push_constant_size", where), where + " push_constant_size", 0, 4096));
  if (info.push_constant_size % 4 != 0) Fail(where, "push_constant_size must be a multiple of 4");

  json::Array args = Array(Field(spec, "args", where), where + " \"args\"");
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string at = where + " args[" + std::to_string(i) + "]";
    json::Object arg = Object(args[i], at);
    std::string kind = Text(Field(arg, "kind", at), at + " kind");
    if (kind == "buffer") {
      // Bindings are the buffer arguments' order, so the descriptor set can be written without a lookup table.
      int64_t binding = Integer(Field(arg, "binding", at), at + " binding", 0, 1 << 20);
      if (binding != info.num_buffers) {
        Fail(at, "buffer binding " + std::to_string(binding) + " should be " + std::to_string(info.num_buffers) +
                     " (bindings follow the buffer arguments' order)");
      }
      info.args.push_back({ArgKind::kBuffer, info.num_buffers++});
      continue;
    }
    ArgKind scalar;
    uint32_t bytes;
    if (kind == "int32") {
      scalar = ArgKind::kInt32, bytes = 4;
    } else if (kind == "int64") {
      scalar = ArgKind::kInt64, bytes = 8;
    } else if (kind == "float32") {
      scalar = ArgKind::kFloat32, bytes = 4;
    } else if (kind == "float64") {
      scalar = ArgKind::kFloat64, bytes = 8;
    } else {
      Fail(at, "unknown kind '" + kind + "' (known: buffer, int32, int64, float32, float64)");
    }
    int64_t at_offset = Integer(Field(arg, "offset", at), at + " offset", 0, info.push_constant_size);
    if (at_offset % bytes != 0 || at_offset + bytes > info.push_constant_size) {
      Fail(at, "offset " + std::to_string(at_offset) + " of a " + kind + " is misaligned or past push_constant_size " +
                   std::to_string(info.push_constant_size));
    }
    info.args.push_back({scalar, static_cast<uint32_t>(at_offset)});
  }

  json::Array launch = Array(Field(spec, "launch", where), where + " \"launch\"");
  for (size_t i = 0; i < launch.size(); ++i) {
    info.launch.push_back(LaunchIndex(Text(launch[i], where + " launch tag"), where));
  }

  json::Array local = Array(Field(spec, "local_size", where), where + " \"local_size\"");
  if (local.size() != 3) Fail(where, "\"local_size\" must have 3 entries");
  for (int i = 0; i < 3; ++i) {
    info.local_size[i] = static_cast<uint32_t>(Integer(local[i], where + " local_size", 1, 1 << 16));
  }
  return info;
}

}  // namespace

std::map<std::string, KernelInfo> ParsePayload(const tvm::ffi::Bytes& payload) {
  const char* data = payload.data();
  size_t size = payload.size();
  if (size < 12 || std::memcmp(data, kMagic, 8) != 0) {
    Fail("", "it does not start with ATRSVK01 (not an Atrous Vulkan module, or a different format version)");
  }
  uint32_t header_size = 0;
  for (int i = 0; i < 4; ++i) header_size |= static_cast<uint32_t>(static_cast<unsigned char>(data[8 + i])) << (8 * i);
  if (header_size > size - 12) {
    Fail("", "the header claims " + std::to_string(header_size) + " bytes but only " + std::to_string(size - 12) +
                 " follow (truncated?)");
  }
  tvm::ffi::String error;
  Any header = json::Parse(String(data + 12, header_size), &error);
  if (!error.empty()) Fail("header", "not valid JSON: " + std::string(error));
  const char* blobs = data + 12 + header_size;
  size_t blob_size = size - 12 - header_size;

  json::Object root = Object(header, "header");
  int64_t version = Integer(Field(root, "version", "header"), "header version", 0, INT32_MAX);
  if (version != 1) Fail("header", "format version " + std::to_string(version) + " is not supported (this runtime: 1)");
  std::map<std::string, KernelInfo> kernels;
  for (const auto& [name, spec] : Object(Field(root, "functions", "header"), "header functions")) {
    std::string kernel = Text(name, "header function name");
    kernels.emplace(kernel, ParseKernel(kernel, Object(spec, "kernel '" + kernel + "'"), blobs, blob_size));
  }
  return kernels;
}

}  // namespace vulkan
}  // namespace atrous
