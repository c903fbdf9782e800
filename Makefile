# Atrous: `make run` is the main job, `make test` the test suite. Both set up everything they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODEL  ?= deeplabv3-mobilenet
PRESET ?= standard
# MODEL: a zoo name, an .onnx or .pt2 file, or FILE.py:FUNCTION returning an nn.Module (then INPUT_SHAPE=x:1x3x512x512)
INPUT_SHAPE ?=
MODEL_ARGS = $(MODEL) --preset $(PRESET) $(if $(INPUT_SHAPE),--input-shape $(INPUT_SHAPE))
TARGET ?= host
# PRECISION=int8 (CPU targets; CALIBRATION=DIR|N) or fp16 (GPU targets) for make run, the device targets, make bench
PRECISION ?= fp32
CALIBRATION ?=
PRECISION_ARGS = $(if $(filter-out fp32,$(PRECISION)),--precision $(PRECISION)) $(if $(CALIBRATION),--calibration $(CALIBRATION))
PYTEST_ARGS ?=
TEST_WORKERS ?= auto
TRIALS ?= 64
comma  := ,

ARM_DEVICES := rpi4 rpi5 jetson-orin-cpu aarch64
CUDA_DEVICES := jetson-orin jetson-xavier rtx3090 rtx4090 a100 h100
VULKAN_DEVICES := vulkan-desktop mali-g610 adreno-740
DEVICE ?=

.PHONY: all run test venv sysdeps list clean help fuzz fuzz-runtime bench bench-isa bench-pointwise bench-layers bench-layers-tuned \
        bench-layers-winograd $(ARM_DEVICES) \
        $(CUDA_DEVICES) \
        $(VULKAN_DEVICES) gpu-pack \
        runtime-host runtime-aarch64
all: run

help:
	@echo "make run   [MODEL=$(MODEL)] [PRESET=$(PRESET)] [TARGET=$(TARGET)]  compile, verify, bench"
	@echo "           PRECISION=int8 [CALIBRATION=DIR|N] (CPU) or PRECISION=fp16 (GPU)    reduced precision"
	@echo "           MODEL=file.py:make_model INPUT_SHAPE=x:1x3x512x512     your own nn.Module (or MODEL=model.pt2)"
	@echo "make test  [PYTEST_ARGS=...] [TEST_WORKERS=auto|N]                   run the test suite (one worker per core)"
	@echo "make tune-<device> [MODEL=...] [PRESET=...] [TRIALS=$(TRIALS)]          tune into targets/tuning/<device>/"
	@echo "make algorithms-<device> [MODELS=a,b]                               time direct vs Winograd per conv"
	@echo "make bench [MODELS=a,b] [VARIANT=winograd=off] [MCPUS=znver3]       zoo vs PyTorch/ORT -> BENCHMARKS.md"
	@echo "make bench PRECISION=int8 [MODELS=a,b]                              int8 vs fp32, atrous vs ORT int8 -> BENCHMARKS.md"
	@echo "make bench-isa                                                      kernels' hot loops on AVX2/AVX-512/NEON (llvm-mca)"
	@echo "make fuzz [N=200] [SEED=0] [ALSO=rpi4,vulkan-desktop] [SHARE=0.05]  random conv nets vs ONNX Runtime"
	@echo "make fuzz-runtime [SECONDS=60]                                     libFuzzer on the runtime's parsers (ASan+UBSan)"
	@echo "make bench-pointwise [MODELS=a,b]                                   1x1 kernels: PixelConv vs pixel_conv=false"
	@echo "make bench-layers                                                   ASPP dilated convs alone -> BENCHMARKS.md"
	@echo "make bench-layers-tuned [TRIALS=64] [LAYERS=0,1]                    the same, tuned: atrous vs stock MetaSchedule"
	@echo "make bench-layers-winograd [LAYERS=0,1]                             backbone 3x3 convs: direct vs Winograd"
	@echo "make rpi4|rpi5|jetson-orin-cpu|aarch64 [MODEL=...] [DEVICE=ssh://pi@host]  cross-compile, bundle, verify"
	@echo "make jetson-orin|h100|a100|rtx4090|... [MODEL=...] [DEVICE=...]     compile + bundle for a GPU; verify on its GPU"
	@echo "make gpu-pack [GPU=h100] [MODELS=a,b] [GPU_PRESET=tiny]            bundles + gpu_check.py for a GPU machine"
	@echo "make vulkan-desktop|mali-g610|adreno-740 [MODEL=...] [DEVICE=...]  Vulkan: verify here (lavapipe) or on DEVICE"
	@echo "make runtime-host | runtime-aarch64                                 build the on-device runtime library"
	@echo "make list                                                           zoo models and targets"
	@echo "make clean                                                          remove build/"

# Debian packages, per device family, each installed when a target of that family is first used (make test
# installs them all). Each entry is command-or-file:package. host: a C++ compiler links model libraries and CMake
# builds the on-device runtime; arm: the aarch64 cross compiler plus qemu-user build and run ARM targets here,
# ssh copies bundles to boards; vulkan: glslang and spirv-tools compile shaders, the runtime builds against the
# Vulkan headers, and Mesa's lavapipe is a CPU Vulkan device to verify on; isa: llvm-mca (llvm-19) estimates the
# kernels' hot loops on CPUs this machine is not (make bench-isa, tests/test_isa.py); fuzz: clang-19 and libFuzzer
# build the runtime parsers' fuzz harnesses (make fuzz-runtime, tests/test_runtime_fuzz.py).
SYSDEPS_host := c++:g++ cmake:cmake file:file
SYSDEPS_arm := aarch64-linux-gnu-g++:g++-aarch64-linux-gnu qemu-aarch64:qemu-user ssh:openssh-client
SYSDEPS_cuda := ssh:openssh-client
SYSDEPS_vulkan := glslangValidator:glslang-tools spirv-val:spirv-tools /usr/include/vulkan/vulkan.h:libvulkan-dev \
                  /usr/share/vulkan/icd.d/lvp_icd.$(shell uname -m).json:mesa-vulkan-drivers
SYSDEPS_isa := llvm-mca-19:llvm-19
SYSDEPS_fuzz := clang++-19:clang-19 /usr/lib/llvm-19/lib/clang/19/lib/linux/libclang_rt.fuzzer-$(shell uname -m).a:libfuzzer-19-dev
SYSDEPS_all := $(SYSDEPS_arm) $(SYSDEPS_vulkan) $(SYSDEPS_isa) $(SYSDEPS_fuzz)
family = $(if $(filter $(1),$(ARM_DEVICES)),arm,$(if $(filter $(1),$(CUDA_DEVICES)),cuda,$(if \
         $(filter $(1),$(VULKAN_DEVICES)),vulkan,host)))

sysdeps: sysdeps-all
sysdeps-%:
	@missing=""; for pair in $(sort $(SYSDEPS_host) $(SYSDEPS_$*)); do what=$${pair%%:*}; \
	  if [ "$${what#/}" != "$$what" ]; then [ -e "$$what" ]; else command -v $$what >/dev/null; fi \
	  || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then \
	    echo "missing Debian packages:$$missing (install them as root: apt-get install$$missing)"; exit 1; fi; \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); echo "installing$$missing (apt-get)"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq$$missing >/dev/null; \
	fi

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(STAMP) sysdeps-host

run: venv sysdeps-$(call family,$(TARGET))
	$(BIN)/atrous run $(MODEL_ARGS) $(PRECISION_ARGS) --target $(TARGET)

# Tuning is resumable: an interrupted run keeps its records and a re-run tops every kernel up to TRIALS.
tune-%: venv
	@$(MAKE) --no-print-directory sysdeps-$(call family,$*)
	$(BIN)/atrous tune $(MODEL_ARGS) --target $* --trials $(TRIALS)

# Only the direct-vs-Winograd choice of each wide 3x3 conv (minutes per model), for MODELS (default: MODEL).
algorithms-%: venv
	for m in $(subst $(comma), ,$(or $(MODELS),$(MODEL))); do \
		$(BIN)/atrous tune $$m --preset $(PRESET) --target $* --algorithms-only || exit 1; done

# Side-by-side benchmark of the zoo (standard presets) against PyTorch and ONNX Runtime, added to BENCHMARKS.md.
MODELS ?=
# On an AVX-512 machine it also times the AVX2 (znver3) build; MCPUS=a,b names other CPUs (MCPUS= for none).
bench: venv
ifeq ($(PRECISION),int8)
	$(BIN)/python -m atrous.pipeline.bench.precision $(if $(MODELS),--models $(MODELS)) \
		$(if $(filter-out undefined,$(origin MCPUS)),--mcpus "$(MCPUS)") --out BENCHMARKS.md
else
	$(BIN)/python -m atrous.pipeline.bench.suite $(if $(MODELS),--models $(MODELS)) $(if $(VARIANT),--variant $(VARIANT)) \
		$(if $(filter-out undefined,$(origin MCPUS)),--mcpus "$(MCPUS)") --out BENCHMARKS.md
endif

# The kernels' hot loops built for znver3, znver4, skylake-avx512, cortex-a72/a76 and estimated by llvm-mca.
bench-isa: venv sysdeps-isa
	$(BIN)/python -m atrous.pipeline.bench.isa --out BENCHMARKS.md

# Each 1x1 conv kernel PixelConv takes, alone, against the same conv with pixel_conv=false; to BENCHMARKS.md.
bench-pointwise: venv
	$(BIN)/python -m atrous.pipeline.bench.pointwise $(if $(MODELS),--models $(MODELS)) --out BENCHMARKS.md

# The dilated ASPP convs alone, with and without the dilation-aware rewrites, added to BENCHMARKS.md.
bench-layers: venv
	$(BIN)/python -m atrous.pipeline.bench.layers --out BENCHMARKS.md

# The same layers tuned with TRIALS MetaSchedule trials each: atrous (rewritten) vs stock TVM, equal budget.
LAYERS ?=
bench-layers-tuned: venv
	$(BIN)/python -m atrous.pipeline.bench.layers --tuned $(TRIALS) $(if $(LAYERS),--layers $(LAYERS)) --out BENCHMARKS.md

# The backbones' 3x3 convs (ResNet-50, dilated VGG-16): direct vs Winograd F(2x2) / F(4x4).
bench-layers-winograd: venv
	$(BIN)/python -m atrous.pipeline.bench.layers --winograd $(if $(LAYERS),--layers $(LAYERS)) --out BENCHMARKS.md

# ARM boards: cross-compile, package build/<model>/<device>/bundle, and verify under qemu (or on DEVICE).
$(ARM_DEVICES): venv sysdeps-arm
	$(BIN)/atrous verify $(MODEL_ARGS) $(PRECISION_ARGS) --target $@ $(if $(DEVICE),--device $(DEVICE))

# NVIDIA GPUs: compile (device code by NVRTC, no GPU needed) and bundle; verify runs where the GPU is: this
# machine for x86_64 cards (a clear error if it has none), DEVICE=ssh://... for a Jetson.
$(CUDA_DEVICES): venv sysdeps-cuda
	$(BIN)/atrous compile $(MODEL_ARGS) $(PRECISION_ARGS) --target $@ --bundle
	@if [ -n "$(DEVICE)" ] || { [ "$@" != jetson-orin ] && [ "$@" != jetson-xavier ] && [ -e /dev/nvidiactl ]; }; then \
	  $(BIN)/atrous verify $(MODEL_ARGS) $(PRECISION_ARGS) --target $@ $(if $(DEVICE),--device $(DEVICE)); \
	else echo "no GPU for $@ here: copy the bundle to the device and run ./run.sh (or make gpu-pack GPU=$@)"; fi

# Vulkan GPUs: vulkan-desktop compiles and verifies on this machine's Vulkan device (lavapipe if nothing else);
# the phone/board GPUs are cross-compiled and bundled, and verified on DEVICE=ssh://... when given.
$(VULKAN_DEVICES): venv sysdeps-vulkan
	@if [ "$@" = vulkan-desktop ] || [ -n "$(DEVICE)" ]; then \
	  $(BIN)/atrous verify $(MODEL_ARGS) $(PRECISION_ARGS) --target $@ $(if $(DEVICE),--device $(DEVICE)); \
	else $(BIN)/atrous compile $(MODEL_ARGS) $(PRECISION_ARGS) --target $@ --bundle; \
	  echo "copy the bundle to the $@ device and run ./run.sh there (or pass DEVICE=ssh://user@host)"; fi

# The GPU check: zoo bundles + runtime/gpu_check.py in build/gpu-check/<target>, run with plain Python + PyTorch
# on the GPU machine (python3 gpu_check.py), which writes results.md.
GPU ?= h100
GPU_PRESET ?= tiny
gpu-pack: venv sysdeps-cuda
	$(BIN)/python -m atrous.pipeline.devices.gpupack --target $(GPU) $(if $(MODELS),--models $(MODELS)) --preset $(GPU_PRESET)

runtime-host: venv
	$(BIN)/atrous runtime

runtime-aarch64: venv sysdeps-arm
	$(BIN)/atrous runtime --arch aarch64

list: venv
	$(BIN)/atrous list models
	$(BIN)/atrous list targets

# Random ONNX conv nets compiled for the host and compared with ONNX Runtime, a share of them (SHARE) also for
# the ALSO targets (rpi4 under qemu, vulkan-desktop on lavapipe); a failure is shrunk and saved to
# tests/fuzz_corpus/ (replayed by make test). One process per core, seeds SEED, SEED+1, ...
N ?= 200
SEED ?= 0
ALSO ?= rpi4,vulkan-desktop
SHARE ?= 0.05
fuzz: venv sysdeps-all
	$(BIN)/python -m atrous.pipeline.fuzz --examples $(N) --seed $(SEED) --workers $(shell nproc) --also $(ALSO) \
	  --share $(SHARE)

# libFuzzer on the runtime's parsers (.npy, model signature, RPC handshake) with ASan+UBSan, SECONDS each.
SECONDS ?= 60
fuzz-runtime: venv sysdeps-fuzz
	$(BIN)/python -m atrous.pipeline.devices.fuzz_runtime --seconds $(SECONDS)

# One pytest-xdist worker per core; work stealing keeps both busy to the end (the slow end-to-end cases vary a lot).
test: venv sysdeps-all
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=15 $(PYTEST_ARGS)

clean:
	rm -rf build
