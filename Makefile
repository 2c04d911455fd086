# Two entry points (see README): `make demo` sets everything up and runs the main job; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
RECIPE ?= recipes/patdnn-8x.yaml

.PHONY: setup data demo test lint bench-pruning bench-compiler bench-blocks bench-library bench-real

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,bench]'
	touch $@

setup: $(VENV)/.installed

data:
	bash scripts/install-data.sh

demo: setup data
	$(VENV)/bin/tessera prune $(RECIPE)

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench-pruning: setup data
	$(PY) benchmarks/pruning_fashion_mnist.py

bench-compiler: setup
	$(PY) benchmarks/compiler_speed.py

bench-blocks: setup data
	$(PY) benchmarks/block_selection.py
	$(PY) benchmarks/block_speed.py
	$(PY) benchmarks/block_pruning_fashion_mnist.py

bench-library: setup data
	$(PY) benchmarks/pattern_library_study.py --seeds 1 --epochs 2,3

bench-real: setup
	$(PY) benchmarks/real_networks.py
