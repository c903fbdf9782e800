# Atrous: `make run` is the main job, `make test` the test suite. Both set up everything they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODEL  ?= deeplabv3-mobilenet
PRESET ?= standard
TARGET ?= host
PYTEST_ARGS ?=
TRIALS ?= 64

.PHONY: all run test venv sysdeps list clean help bench bench-layers
all: run

help:
	@echo "make run   [MODEL=$(MODEL)] [PRESET=$(PRESET)] [TARGET=$(TARGET)]  compile, verify, bench"
	@echo "make test  [PYTEST_ARGS=...]                                        run the test suite"
	@echo "make tune-<device> [MODEL=...] [PRESET=...] [TRIALS=$(TRIALS)]          tune into targets/tuning/<device>/"
	@echo "make bench [MODELS=a,b]                                             zoo vs PyTorch/ORT -> BENCHMARKS.md"
	@echo "make bench-layers                                                   ASPP dilated convs alone -> BENCHMARKS.md"
	@echo "make list                                                           zoo models and targets"
	@echo "make clean                                                          remove build/"

# Debian packages the host target needs (a C++ compiler links model libraries).
sysdeps:
	@command -v c++ >/dev/null || { echo "installing g++ (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null; }

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(STAMP) sysdeps

run: venv
	$(BIN)/atrous run $(MODEL) --preset $(PRESET) --target $(TARGET)

# Tuning is resumable: an interrupted run keeps its records and a re-run tops every kernel up to TRIALS.
tune-%: venv
	$(BIN)/atrous tune $(MODEL) --preset $(PRESET) --target $* --trials $(TRIALS)

# Side-by-side benchmark of the zoo (standard presets) against PyTorch and ONNX Runtime, appended to BENCHMARKS.md.
MODELS ?=
bench: venv
	$(BIN)/python -m pipeline.benchsuite $(if $(MODELS),--models $(MODELS)) --out BENCHMARKS.md

# The dilated ASPP convs alone, with and without the dilation-aware rewrites, appended to BENCHMARKS.md.
bench-layers: venv
	$(BIN)/python -m pipeline.benchlayers --out BENCHMARKS.md

list: venv
	$(BIN)/atrous list models
	$(BIN)/atrous list targets

test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf build
