// Bringing up the CUDA device for a model whose signature says "device cuda sm_XX".
//
// The runtime itself never links against CUDA: a CPU-only board needs no NVIDIA library. For a CUDA model the
// driver (libcuda.so.1) is opened first and asked, through its stable C API, whether a GPU exists, which CUDA
// version it supports and which compute capability device 0 has, so that every "cannot run here" case is one
// clear sentence. Only then is TVM's CUDA runtime (libtvm_runtime_cuda.so, shipped beside this library with
// the libcudart it needs) loaded, which registers the CUDA device API and the loader of the model's cubin.
#include "cuda_device.h"

#include <dlfcn.h>

#include <string>

namespace atrous {
namespace {

using CUresult = int;
using CuInit = CUresult (*)(unsigned);
using CuDriverGetVersion = CUresult (*)(int*);
using CuDeviceGetCount = CUresult (*)(int*);
using CuDeviceGet = CUresult (*)(int*, int);
using CuDeviceGetAttribute = CUresult (*)(int*, int, int);
using CuDeviceGetName = CUresult (*)(char*, int, int);
using CudaRuntimeGetVersion = int (*)(int*);

constexpr int kNoDevice = 100;
constexpr int kInsufficientDriver = 35;
constexpr int kAttrMajor = 75;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kAttrMinor = 76;

std::string Version(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

template <typename F>
F Symbol(void* lib, const char* name) {
  return reinterpret_cast<F>(dlsym(lib, name));
}

// "sm_87" -> 87; 0 if malformed.
int SmNumber(const std::string& arch) {
  if (arch.rfind("sm_", 0) != 0) return 0;
  try {
    return std::stoi(arch.substr(3));
  } catch (...) {
    return 0;
  }
}

}  // namespace

bool PrepareCuda(const std::string& arch, std::string* problem) {
  static void* runtime = nullptr;  // TVM's CUDA runtime stays loaded for the process once it loaded
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (driver == nullptr) {
    *problem = "this model runs on an NVIDIA GPU (" + arch + ") but there is no NVIDIA driver here (" +
               std::string(dlerror()) + "); run it on a machine with the GPU and its driver (>= 580 for CUDA 13)";
    return false;
  }
  auto init = Symbol<CuInit>(driver, "cuInit");
  auto driver_version = Symbol<CuDriverGetVersion>(driver, "cuDriverGetVersion");
  auto count = Symbol<CuDeviceGetCount>(driver, "cuDeviceGetCount");
  auto get = Symbol<CuDeviceGet>(driver, "cuDeviceGet");
  auto attribute = Symbol<CuDeviceGetAttribute>(driver, "cuDeviceGetAttribute");
  auto get_name = Symbol<CuDeviceGetName>(driver, "cuDeviceGetName");
  if (!init || !driver_version || !count || !get || !attribute || !get_name) {
    *problem = "libcuda.so.1 here is not a usable NVIDIA driver (missing cuInit/cuDeviceGet...)";
    return false;
  }
  int status = init(0);
  if (status == kNoDevice) {
    *problem = "this model runs on an NVIDIA GPU (" + arch + "); the NVIDIA driver is installed but sees no GPU";
    return false;
  }
  if (status == kInsufficientDriver) {
    *problem = "the NVIDIA driver here is too old for this GPU or this CUDA runtime; update it (>= 580 for CUDA 13)";
    return false;
  }
  int devices = 0;
  if (status != 0 || count(&devices) != 0 || devices == 0) {
    *problem = "no usable CUDA GPU here (cuInit returned " + std::to_string(status) + ")";
    return false;
  }
  int device = 0, major = 0, minor = 0;
  char name[256] = "unknown GPU";
  get(&device, 0);
  attribute(&major, kAttrMajor, device);
  attribute(&minor, kAttrMinor, device);
  get_name(name, sizeof(name), device);
  // A cubin runs on GPUs of its own major architecture with the same or a higher minor version (sm_80 code runs
  // on sm_86/87/89), except the Hopper-specific sm_90a forms, which need exactly sm_90.
  int want = SmNumber(arch), have = major * 10 + minor;
  if (want == 0 || want / 10 != major || have < want) {
    *problem = "this model was compiled for " + arch + " but GPU 0 (" + name + ") is sm_" + std::to_string(have) +
               "; recompile it for this GPU's target (atrous list targets)";
    return false;
  }
  if (runtime == nullptr) {
    runtime = dlopen("libtvm_runtime_cuda.so", RTLD_NOW | RTLD_GLOBAL);
    if (runtime == nullptr) {
      *problem = "cannot load TVM's CUDA runtime (" + std::string(dlerror()) +
                 "); it and libcudart.so.13 ship in the bundle's lib/ directory";
      return false;
    }
  }
  auto runtime_version = reinterpret_cast<CudaRuntimeGetVersion>(dlsym(RTLD_DEFAULT, "cudaRuntimeGetVersion"));
  int needs = 0, supports = 0;
  if (runtime_version && runtime_version(&needs) == 0 && driver_version(&supports) == 0 && supports < needs) {
    *problem = "the NVIDIA driver here supports CUDA " + Version(supports) + " but the bundled CUDA runtime needs " +
               Version(needs) + "; update the driver";
    return false;
  }
  return true;
}

}  // namespace atrous
