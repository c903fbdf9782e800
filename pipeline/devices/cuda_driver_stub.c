/* A stand-in for the NVIDIA driver library (libcuda.so.1), used only at compile time on machines without one.
 *
 * TVM's libtvm_runtime_cuda.so links against these nine driver functions. Loading that library is what makes
 * TVM serialise CUDA modules as cubins (pipeline/cuda.py); compiling never launches anything, so each function
 * here reports CUDA_ERROR_NO_DEVICE. It is never shipped in a bundle and never loaded where a driver exists. */
typedef int CUresult;
#define CUDA_ERROR_NO_DEVICE 100

static const char kName[] = "CUDA_ERROR_NO_DEVICE";
static const char kText[] = "no NVIDIA driver: this is atrous's compile-time stand-in for libcuda.so.1";

CUresult cuGetErrorName(CUresult error, const char** text) { (void)error; *text = kName; return 0; }
CUresult cuGetErrorString(CUresult error, const char** text) { (void)error; *text = kText; return 0; }
CUresult cuDeviceGetName(char* name, int len, int device) { (void)name; (void)len; (void)device; return CUDA_ERROR_NO_DEVICE; }
CUresult cuFuncSetAttribute(void* f, int attr, int value) { (void)f; (void)attr; (void)value; return CUDA_ERROR_NO_DEVICE; }
CUresult cuLaunchKernelEx(const void* config, void* f, void** params, void** extra) {
  (void)config; (void)f; (void)params; (void)extra; return CUDA_ERROR_NO_DEVICE;
}
CUresult cuModuleGetFunction(void** f, void* module, const char* name) { (void)f; (void)module; (void)name; return CUDA_ERROR_NO_DEVICE; }
CUresult cuModuleLoadData(void** module, const void* image) { (void)module; (void)image; return CUDA_ERROR_NO_DEVICE; }
CUresult cuModuleUnload(void* module) { (void)module; return CUDA_ERROR_NO_DEVICE; }
CUresult cuTensorMapEncodeTiled(void) { return CUDA_ERROR_NO_DEVICE; }
