// The C API of atrous.h over the TVM runtime: load a compiled model library, read the signature it carries,
// and run its Relax VM on the device the signature names (the CPU, a CUDA GPU: cuda_device.cc, or a Vulkan GPU:
// vulkan_device.cc).
#include "atrous/atrous.h"

#include <dlfcn.h>
#include <sched.h>
#include <unistd.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "cuda_device.h"
#include "elf_check.h"
#include "vulkan_device.h"
#include "signature.h"

#ifndef ATROUS_VERSION
#define ATROUS_VERSION "0"
#endif

namespace ffi = tvm::ffi;

namespace {

thread_local std::string last_error;

int Fail(const std::string& message) {
  last_error = message;
  return -1;
}

std::optional<DLDataType> ParseDtype(const std::string& name) {
  static const std::map<std::string, DLDataType> known = {
      {"float32", {kDLFloat, 32, 1}}, {"float64", {kDLFloat, 64, 1}}, {"float16", {kDLFloat, 16, 1}},
      {"int8", {kDLInt, 8, 1}},       {"int16", {kDLInt, 16, 1}},     {"int32", {kDLInt, 32, 1}},
      {"int64", {kDLInt, 64, 1}},     {"uint8", {kDLUInt, 8, 1}},     {"bool", {kDLBool, 8, 1}}};
  auto it = known.find(name);
  if (it == known.end()) return std::nullopt;
  return it->second;
}

size_t NumBytes(const atrous::TensorSig& t, DLDataType dtype) {
  size_t n = 1;
  for (int64_t d : t.shape) n *= static_cast<size_t>(d);
  return n * ((dtype.bits * dtype.lanes + 7) / 8);
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

// Physical cores of this process's affinity mask: CPUs grouped by (package, core id), so that SMT siblings count
// once; a CPU whose topology is not readable counts as a core of its own.
int PhysicalCores() {
  cpu_set_t mask;
  if (sched_getaffinity(0, sizeof(mask), &mask) != 0) return 1;
  std::set<std::pair<std::string, std::string>> cores;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &mask)) continue;
    std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream package(dir + "physical_package_id"), core(dir + "core_id");
    std::string p, c;
    if (package >> p && core >> c) {
      cores.insert({p, c});
    } else {
      cores.insert({"cpu", std::to_string(cpu)});
    }
  }
  return cores.empty() ? 1 : static_cast<int>(cores.size());
}

// TVM's thread pool reads TVM_NUM_THREADS when it starts and otherwise takes half the cores on x86. Set once per
// process: setenv is not safe against another thread's getenv, and two threads may load models at once.
void DefaultThreads() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("TVM_NUM_THREADS") == nullptr) setenv("TVM_NUM_THREADS", std::to_string(PhysicalCores()).c_str(), 0);
  });
}

}  // namespace

// TVM's device-generic tensor functions (the same ones its Python API uses): allocation on any device and
// copies between host memory and a tensor on it.
struct TensorOps {
  ffi::Function alloc = ffi::Function::GetGlobalRequired("runtime.TVMTensorAllocWithScope");
  ffi::Function copy_from = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyFromBytes");
  ffi::Function copy_to = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyToBytes");
  ffi::Function sync = ffi::Function::GetGlobalRequired("runtime.Device_StreamSync");
};

struct atrous_model {
  std::string path;
  atrous::Signature sig;
  DLDevice device{kDLCPU, 0};
  std::optional<TensorOps> ops;
  std::vector<DLDataType> in_dtypes, out_dtypes;
  std::optional<ffi::Module> library;  // kept alive: the VM's code lives in it
  std::optional<ffi::Module> vm;
  ffi::Function main;
  std::vector<std::optional<ffi::Tensor>> inputs;
  std::vector<ffi::Tensor> outputs;
};

extern "C" {

const char* atrous_last_error(void) { return last_error.c_str(); }
void atrous_clear_error(void) { last_error.clear(); }

const char* atrous_version(void) {
  static const std::string text = std::string("atrous-runtime ") + ATROUS_VERSION;
  return text.c_str();
}

int atrous_threads(void) {
  DefaultThreads();
  auto count = ffi::Function::GetGlobal("runtime.NumThreads");
  return count ? (*count)().cast<int>() : Fail("the TVM runtime has no runtime.NumThreads");
}

atrous_model* atrous_load(const char* path) {
  DefaultThreads();
  if (path == nullptr) return Fail("atrous_load: path is NULL"), nullptr;
  if (access(path, R_OK) != 0) return Fail(std::string("cannot read ") + path + ": " + std::strerror(errno)), nullptr;
  // A truncated library would be mapped past its end (SIGBUS on first touch), a foreign one refused vaguely.
  std::string problem;
  if (!atrous::CheckElfFile(path, &problem)) {
    return Fail(std::string(path) + ": not a loadable model library (" + problem +
                "); is it built for this architecture by `atrous compile --target <this device>`?"),
           nullptr;
  }
  // dlopen searches the library path for a bare file name; a model is always a file path.
  std::string file = std::strchr(path, '/') ? path : std::string("./") + path;
  // Read the signature first: dlopen names a non-library or a wrong-architecture file far more clearly
  // than the module loader does.
  void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    return Fail(std::string(path) + ": not a loadable model library (" + (why ? why : "unknown") +
                "); is it built for this architecture by `atrous compile --target <this device>`?"),
           nullptr;
  }
  const char* text = static_cast<const char*>(dlsym(handle, "atrous_signature"));
  auto model = std::make_unique<atrous_model>();
  model->path = path;
  bool parsed = text != nullptr && atrous::ParseSignature(text, &model->sig, &problem);
  dlclose(handle);
  if (text == nullptr) {
    return Fail(std::string(path) + ": no atrous signature in this library; it was not built by "
                                    "`atrous compile` (rebuild it with atrous)"),
           nullptr;
  }
  if (!parsed) return Fail(std::string(path) + ": bad atrous signature: " + problem), nullptr;
  if (model->sig.device == "cuda") {
    if (!atrous::PrepareCuda(model->sig.device_arch, &problem)) return Fail(std::string(path) + ": " + problem), nullptr;
    model->device = DLDevice{kDLCUDA, 0};
  } else if (model->sig.device == "vulkan") {
    if (!atrous::PrepareVulkan(&problem)) return Fail(std::string(path) + ": " + problem), nullptr;
    model->device = DLDevice{kDLVulkan, 0};
  } else if (model->sig.device != "cpu") {
    return Fail(std::string(path) + ": compiled for device '" + model->sig.device +
                "', which this runtime does not support (it runs cpu, cuda and vulkan models)"),
           nullptr;
  }
  for (auto* group : {&model->sig.inputs, &model->sig.outputs}) {
    for (const auto& t : *group) {
      auto dtype = ParseDtype(t.dtype);
      if (!dtype) return Fail(std::string(path) + ": unsupported dtype " + t.dtype + " of " + t.name), nullptr;
      (group == &model->sig.inputs ? model->in_dtypes : model->out_dtypes).push_back(*dtype);
    }
  }
  try {
    model->library = ffi::Module::LoadFromFile(file);
    auto load = (*model->library)->GetFunction("vm_load_executable");
    if (!load) return Fail(std::string(path) + ": not a Relax VM executable (no vm_load_executable)"), nullptr;
    model->vm = (*load)().cast<ffi::Module>();
    auto init = (*model->vm)->GetFunction("vm_initialization");
    auto main = (*model->vm)->GetFunction("main");
    if (!init || !main) return Fail(std::string(path) + ": the VM has no main function"), nullptr;
    constexpr int kPooled = 2;
    if (model->device.device_type == kDLCPU) {
      (*init)(static_cast<int>(kDLCPU), 0, kPooled);
    } else {  // the VM runs shape computations on the host: the CPU comes last
      (*init)(static_cast<int>(model->device.device_type), model->device.device_id, kPooled,
              static_cast<int>(kDLCPU), 0, kPooled);
    }
    model->main = *main;
    model->ops.emplace();
  } catch (const std::exception& err) {
    return Fail(std::string(path) + ": TVM could not load the model: " + err.what()), nullptr;
  }
  model->inputs.resize(model->sig.inputs.size());
  return model.release();
}

void atrous_free(atrous_model* model) { delete model; }

int atrous_num_inputs(const atrous_model* model) {
  return model ? static_cast<int>(model->sig.inputs.size()) : Fail("atrous_num_inputs: model is NULL");
}

int atrous_num_outputs(const atrous_model* model) {
  return model ? static_cast<int>(model->sig.outputs.size()) : Fail("atrous_num_outputs: model is NULL");
}

static int Info(const atrous_model* model, bool input, int index, atrous_tensor_info* info) {
  const char* what = input ? "input" : "output";
  if (model == nullptr || info == nullptr) return Fail(std::string("atrous_") + what + "_info: NULL argument");
  const auto& group = input ? model->sig.inputs : model->sig.outputs;
  if (index < 0 || static_cast<size_t>(index) >= group.size()) {
    return Fail(std::string(what) + " index " + std::to_string(index) + " out of range: the model has " +
                std::to_string(group.size()) + " " + what + "(s)");
  }
  const auto& t = group[index];
  if (t.shape.size() > ATROUS_MAX_NDIM) return Fail(t.name + " has more than ATROUS_MAX_NDIM dimensions");
  info->name = t.name.c_str();
  info->dtype = t.dtype.c_str();
  info->ndim = static_cast<int>(t.shape.size());
  for (size_t i = 0; i < t.shape.size(); ++i) info->shape[i] = t.shape[i];
  info->nbytes = NumBytes(t, (input ? model->in_dtypes : model->out_dtypes)[index]);
  return 0;
}

int atrous_input_info(const atrous_model* model, int index, atrous_tensor_info* info) {
  return Info(model, true, index, info);
}

int atrous_output_info(const atrous_model* model, int index, atrous_tensor_info* info) {
  return Info(model, false, index, info);
}

int atrous_input_index(const atrous_model* model, const char* name) {
  if (model == nullptr || name == nullptr) return Fail("atrous_input_index: NULL argument");
  std::string valid;
  for (size_t i = 0; i < model->sig.inputs.size(); ++i) {
    if (model->sig.inputs[i].name == name) return static_cast<int>(i);
    valid += (i ? ", " : "") + model->sig.inputs[i].name;
  }
  return Fail(std::string("no input called '") + name + "'; the model's inputs: " + valid);
}

int atrous_set_input(atrous_model* model, const char* name, const void* data, size_t nbytes) {
  if (model == nullptr || data == nullptr) return Fail("atrous_set_input: NULL argument");
  int index = atrous_input_index(model, name);
  if (index < 0) return -1;
  const auto& sig = model->sig.inputs[index];
  DLDataType dtype = model->in_dtypes[index];
  size_t want = NumBytes(sig, dtype);
  if (nbytes != want) {
    return Fail("input '" + sig.name + "' is " + sig.dtype + ShapeText(sig.shape) + " (" + std::to_string(want) +
                " bytes), got " + std::to_string(nbytes) + " bytes; recompile for the new shape or pass data "
                "of the compiled shape");
  }
  try {
    if (!model->inputs[index]) {  // allocated once on the model's device, refilled by later calls
      model->inputs[index] = model->ops->alloc(ffi::Shape(sig.shape.begin(), sig.shape.end()), dtype,
                                               model->device, nullptr).cast<ffi::Tensor>();
    }
    model->ops->copy_from(*model->inputs[index], const_cast<void*>(data), static_cast<int64_t>(nbytes));
  } catch (const std::exception& err) {
    return Fail(std::string("could not set input '") + name + "': " + err.what());
  }
  return 0;
}

int atrous_run(atrous_model* model) {
  if (model == nullptr) return Fail("atrous_run: model is NULL");
  std::vector<ffi::AnyView> args;
  for (size_t i = 0; i < model->inputs.size(); ++i) {
    if (!model->inputs[i]) return Fail("input '" + model->sig.inputs[i].name + "' was not set");
    args.push_back(*model->inputs[i]);
  }
  try {
    ffi::Any result;
    model->main.CallPacked(args.data(), static_cast<int>(args.size()), &result);
    std::vector<ffi::Tensor> outputs;
    if (auto single = result.as<ffi::Tensor>()) {
      outputs.push_back(*single);
    } else if (auto many = result.as<ffi::Array<ffi::Any>>()) {
      for (const ffi::Any& item : *many) {
        auto t = item.as<ffi::Tensor>();
        if (!t) return Fail("the model returned a non-tensor output");
        outputs.push_back(*t);
      }
    } else {
      return Fail("the model returned neither a tensor nor a tuple of tensors");
    }
    if (outputs.size() != model->sig.outputs.size()) {
      return Fail("the model returned " + std::to_string(outputs.size()) + " outputs, its signature names " +
                  std::to_string(model->sig.outputs.size()));
    }
    model->outputs = std::move(outputs);
    // the call returns once kernels are queued; the C API promises finished outputs (stream 0: the default one,
    // passed as the integer the function takes; a null pointer arrives as None and is refused)
    if (model->device.device_type != kDLCPU) model->ops->sync(model->device, static_cast<int64_t>(0));
  } catch (const std::exception& err) {
    return Fail(std::string("run failed: ") + err.what());
  }
  return 0;
}

int atrous_get_output(const atrous_model* model, int index, void* data, size_t nbytes) {
  if (model == nullptr || data == nullptr) return Fail("atrous_get_output: NULL argument");
  if (model->outputs.empty()) return Fail("no outputs yet: call atrous_run first");
  if (index < 0 || static_cast<size_t>(index) >= model->outputs.size()) {
    return Fail("output index " + std::to_string(index) + " out of range: the model has " +
                std::to_string(model->outputs.size()) + " output(s)");
  }
  const ffi::Tensor& t = model->outputs[index];
  size_t have = ffi::GetDataSize(*t.GetDLTensorPtr());
  if (nbytes != have) {
    return Fail("output '" + model->sig.outputs[index].name + "' is " + std::to_string(have) + " bytes, got a " +
                std::to_string(nbytes) + "-byte buffer");
  }
  if (!t.IsContiguous()) return Fail("output is not a dense tensor");
  try {
    model->ops->copy_to(t, data, static_cast<int64_t>(nbytes));
  } catch (const std::exception& err) {
    return Fail(std::string("could not read output '") + model->sig.outputs[index].name + "': " + err.what());
  }
  return 0;
}

}  // extern "C"
