# Tandem: every set-up step lives here, so `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tandem-installed
# vLLM and DeepSpeed pick their CPU back-ends from these; harmless on GPU machines that override them.
export DS_ACCELERATOR ?= cpu
export VLLM_TARGET_DEVICE ?= cpu
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

APT_PACKAGES := bubblewrap libseccomp2 docker-compose redis-server
DEMO_MODEL := models/tiny-arith

.PHONY: install system-deps demo test test-fast lint models clean

install: $(STAMP)

# Debian packages the project shells out to (bwrap for the unit-test sandbox and libseccomp2 for its
# seccomp filter, docker-compose to validate the compose file, redis-server for the tests that restart
# their own Redis). Installed only when missing.
system-deps:
	@missing=""; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	{ ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | grep -q 'libseccomp\.so\.2 ' || missing="$$missing libseccomp2"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[cpu,dev]"
	# The registry's torchvision/torchaudio/torchcodec are built for another torch and make
	# `import transformers` fail beside torch 2.13+cpu; text generation needs none of them.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(BIN)/python -c "import torch, transformers, vllm, deepspeed, ray" 2>&1 | tail -1
	touch $(STAMP)

$(DEMO_MODEL)/config.json: | install
	$(BIN)/tandem make-model --task arithmetic --out $(DEMO_MODEL)

models: $(DEMO_MODEL)/config.json

# Each demo run gets its own directory, so running it again never collides with an earlier run.
demo: install models
	$(BIN)/tandem train --config configs/demo.yaml --run-dir runs/demo-$$(date +%Y%m%d-%H%M%S)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true

clean:
	rm -rf $(VENV) models runs .pytest_cache
