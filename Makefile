# Two entry points (see README): `make demo` sets everything up and runs the main job; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
RECIPE ?= recipes/quick.yaml

.PHONY: setup data demo test test-slow lint bench-pruning bench-compiler bench-blocks bench-library bench-real \
	setup-deepsparse setup-mnn

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
	$(VENV)/bin/tessera run $(RECIPE)

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow -p no:cacheprovider

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

# The other sparse CPU runtimes, each in a venv of its own (their pins clash with ours); the real-networks
# benchmark runs them in a subprocess when these exist and says so when they do not.
.venv-deepsparse/.installed:
	python3 -m venv .venv-deepsparse
	.venv-deepsparse/bin/pip install -q --no-deps deepsparse==1.8.0 sparsezoo==1.8.1
	.venv-deepsparse/bin/pip install -q onnx==1.14.1 "numpy<2" protobuf==3.20.3 pydantic click pyyaml requests \
		tqdm py-machineid geocoder
	touch $@

setup-deepsparse: .venv-deepsparse/.installed

.venv-mnn/.installed:
	python3 -m venv .venv-mnn
	.venv-mnn/bin/pip install -q mnn numpy mnncompress onnx==1.17.0
	touch $@

setup-mnn: .venv-mnn/.installed
