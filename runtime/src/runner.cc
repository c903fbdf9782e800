// atrous-run: run a compiled model on .npy inputs, write or check its outputs, and time it.
//
//   atrous-run model.so --input x.npy [--input NAME=FILE.npy ...] [--output y.npy | --output-dir DIR]
//              [--expect [NAME=]FILE.npy ...] [--rel-l2 1e-5] [--max-abs 1e-4] [--repeat N] [--threads N]
//   atrous-run model.so --info
//
// Exit status: 0 success, 1 outputs differ from --expect beyond tolerance, 2 bad usage or input, 3 run failed.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "atrous/atrous.h"
#include "npy.h"

namespace {

constexpr int kMismatch = 1, kUsage = 2, kFailed = 3;

struct Options {
  std::string model;
  std::vector<std::pair<std::string, std::string>> inputs, outputs, expects;  // (name or "", file)
  std::string output_dir;
  double rel_l2 = 1e-5, max_abs = 1e-4;
  int repeat = 0;
  bool info = false;
};

int Usage(const std::string& problem) {
  std::fprintf(stderr, "atrous-run: %s\n", problem.c_str());
  std::fprintf(stderr,
               "usage: atrous-run MODEL.so [--input [NAME=]FILE.npy]... [--output [NAME=]FILE.npy]... "
               "[--output-dir DIR]\n"
               "                  [--expect [NAME=]FILE.npy]... [--rel-l2 X] [--max-abs X] [--repeat N] "
               "[--threads N] [--info]\n");
  return kUsage;
}

std::pair<std::string, std::string> NamedFile(const std::string& arg) {
  size_t eq = arg.find('=');
  if (eq == std::string::npos) return {"", arg};
  return {arg.substr(0, eq), arg.substr(eq + 1)};
}

bool ParseArgs(int argc, char** argv, Options* o, std::string* problem) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        *problem = arg + " needs a value";
        return "";
      }
      return argv[++i];
    };
    try {
      if (arg == "--input") o->inputs.push_back(NamedFile(value()));
      else if (arg == "--output") o->outputs.push_back(NamedFile(value()));
      else if (arg == "--expect") o->expects.push_back(NamedFile(value()));
      else if (arg == "--output-dir") o->output_dir = value();
      else if (arg == "--rel-l2") o->rel_l2 = std::stod(value());
      else if (arg == "--max-abs") o->max_abs = std::stod(value());
      else if (arg == "--repeat") o->repeat = std::stoi(value());
      else if (arg == "--threads") setenv("TVM_NUM_THREADS", value().c_str(), 1);
      else if (arg == "--info") o->info = true;
      else if (arg == "-h" || arg == "--help") return *problem = "help", false;
      else if (!arg.empty() && arg[0] == '-') return *problem = "unknown option " + arg, false;
      else if (o->model.empty()) o->model = arg;
      else return *problem = "unexpected argument " + arg, false;
    } catch (const std::exception&) {
      return *problem = "bad number for " + arg, false;
    }
    if (!problem->empty()) return false;
  }
  if (o->model.empty()) return *problem = "no model library given", false;
  if (o->repeat < 0) return *problem = "--repeat must be >= 0", false;
  return true;
}

std::string ShapeText(const int64_t* shape, int ndim) {
  std::string text = "[";
  for (int i = 0; i < ndim; ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

void PrintInfo(atrous_model* m) {
  atrous_tensor_info t;
  for (int i = 0; i < atrous_num_inputs(m); ++i) {
    atrous_input_info(m, i, &t);
    std::printf("input  %-16s %s%s\n", t.name, t.dtype, ShapeText(t.shape, t.ndim).c_str());
  }
  for (int i = 0; i < atrous_num_outputs(m); ++i) {
    atrous_output_info(m, i, &t);
    std::printf("output %-16s %s%s\n", t.name, t.dtype, ShapeText(t.shape, t.ndim).c_str());
  }
  std::printf("threads %d\n", atrous_threads());
}

// Output index of a (name, file) pair; an empty name means "the only output" or position `fallback`.
int OutputIndex(atrous_model* m, const std::string& name, int fallback, std::string* problem) {
  int n = atrous_num_outputs(m);
  if (name.empty()) {
    if (fallback < n) return fallback;
    *problem = "more output files than the model's " + std::to_string(n) + " output(s)";
    return -1;
  }
  atrous_tensor_info t;
  std::string valid;
  for (int i = 0; i < n; ++i) {
    atrous_output_info(m, i, &t);
    if (name == t.name) return i;
    valid += (i ? ", " : "") + std::string(t.name);
  }
  *problem = "no output called '" + name + "'; the model's outputs: " + valid;
  return -1;
}

atrous::NpyArray Output(atrous_model* m, int index) {
  atrous_tensor_info t;
  atrous_output_info(m, index, &t);
  atrous::NpyArray a;
  a.dtype = t.dtype;
  a.shape.assign(t.shape, t.shape + t.ndim);
  a.data.resize(t.nbytes);
  atrous_get_output(m, index, a.data.data(), a.data.size());
  return a;
}

// Same rule as pipeline/verify.py: rel-L2 <= rel_l2 and max-abs <= max_abs * max(1, max|expected|).
bool Check(const std::string& name, const atrous::NpyArray& got, const atrous::NpyArray& want, const Options& o) {
  if (got.dtype != want.dtype || got.shape != want.shape) {
    std::printf("%-16s MISMATCH: got %s%s, expected %s%s\n", name.c_str(), got.dtype.c_str(),
                ShapeText(got.shape.data(), static_cast<int>(got.shape.size())).c_str(), want.dtype.c_str(),
                ShapeText(want.shape.data(), static_cast<int>(want.shape.size())).c_str());
    return false;
  }
  size_t n = got.data.size() / std::max<size_t>(1, atrous::ItemSize(got.dtype));
  double max_abs = 0, diff2 = 0, ref2 = 0, scale = 1;
  bool finite = true;
  for (size_t i = 0; i < n; ++i) {
    double a = atrous::ElementAsDouble(got, i), e = atrous::ElementAsDouble(want, i);
    finite = finite && std::isfinite(a);
    max_abs = std::max(max_abs, std::fabs(a - e));
    diff2 += (a - e) * (a - e);
    ref2 += e * e;
    scale = std::max(scale, std::fabs(e));
  }
  double rel = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  bool ok = finite && rel <= o.rel_l2 && max_abs <= o.max_abs * scale;
  std::printf("%-16s max-abs %.3e  rel-L2 %.3e  %s%s\n", name.c_str(), max_abs, rel, ok ? "ok" : "MISMATCH",
              finite ? "" : " (non-finite values)");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string problem;
  if (!ParseArgs(argc, argv, &o, &problem)) return problem == "help" ? (Usage("help"), 0) : Usage(problem);
  atrous_model* m = atrous_load(o.model.c_str());
  if (m == nullptr) return std::fprintf(stderr, "atrous-run: %s\n", atrous_last_error()), kUsage;
  if (o.info) {
    PrintInfo(m);
    atrous_free(m);
    return 0;
  }
  int status = 0;
  auto fail = [&](int code, const std::string& why) {
    std::fprintf(stderr, "atrous-run: %s\n", why.c_str());
    atrous_free(m);
    return code;
  };
  if (static_cast<int>(o.inputs.size()) != atrous_num_inputs(m)) {
    return fail(kUsage, "the model takes " + std::to_string(atrous_num_inputs(m)) + " input(s), got " +
                            std::to_string(o.inputs.size()) + " --input file(s) (see --info)");
  }
  for (size_t i = 0; i < o.inputs.size(); ++i) {
    auto [name, file] = o.inputs[i];
    atrous_tensor_info t;
    if (name.empty()) atrous_input_info(m, static_cast<int>(i), &t), name = t.name;
    atrous::NpyArray a;
    if (!atrous::ReadNpy(file, &a, &problem)) return fail(kUsage, problem);
    int index = atrous_input_index(m, name.c_str());
    if (index < 0) return fail(kUsage, atrous_last_error());
    atrous_input_info(m, index, &t);
    std::vector<int64_t> want(t.shape, t.shape + t.ndim);
    if (a.dtype != t.dtype || a.shape != want) {
      return fail(kUsage, "input '" + name + "' was compiled for " + t.dtype + ShapeText(t.shape, t.ndim) + ", " +
                              file + " holds " + a.dtype +
                              ShapeText(a.shape.data(), static_cast<int>(a.shape.size())) +
                              "; recompile for the new shape or pass data of the compiled shape");
    }
    if (atrous_set_input(m, name.c_str(), a.data.data(), a.data.size()) != 0) {
      return fail(kUsage, atrous_last_error());
    }
  }
  if (atrous_run(m) != 0) return fail(kFailed, atrous_last_error());
  if (o.repeat > 0) {
    std::vector<double> ms;
    for (int r = 0; r < o.repeat; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      if (atrous_run(m) != 0) return fail(kFailed, atrous_last_error());
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    std::printf("latency: median %.3f ms, min %.3f ms, max %.3f ms over %d runs (after 1 warm-up), %d threads\n",
                ms[ms.size() / 2], ms.front(), ms.back(), o.repeat, atrous_threads());
  }
  for (size_t i = 0; i < o.outputs.size(); ++i) {
    int index = OutputIndex(m, o.outputs[i].first, static_cast<int>(i), &problem);
    if (index < 0) return fail(kUsage, problem);
    if (!atrous::WriteNpy(o.outputs[i].second, Output(m, index), &problem)) return fail(kUsage, problem);
  }
  if (!o.output_dir.empty()) {
    for (int i = 0; i < atrous_num_outputs(m); ++i) {
      atrous_tensor_info t;
      atrous_output_info(m, i, &t);
      std::string path = o.output_dir + "/output" + std::to_string(i) + ".npy";
      if (!atrous::WriteNpy(path, Output(m, i), &problem)) return fail(kUsage, problem);
    }
  }
  if (!o.expects.empty()) {
    std::printf("tolerance: rel-L2 <= %g, max-abs <= %g x max(1, max|ref|)\n", o.rel_l2, o.max_abs);
  }
  for (size_t i = 0; i < o.expects.size(); ++i) {
    int index = OutputIndex(m, o.expects[i].first, static_cast<int>(i), &problem);
    if (index < 0) return fail(kUsage, problem);
    atrous::NpyArray want;
    if (!atrous::ReadNpy(o.expects[i].second, &want, &problem)) return fail(kUsage, problem);
    atrous_tensor_info t;
    atrous_output_info(m, index, &t);
    if (!Check(t.name, Output(m, index), want, o)) status = kMismatch;
  }
  atrous_free(m);
  return status;
}
