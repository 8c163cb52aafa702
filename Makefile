# Everything a newcomer needs, from a machine with only Python 3.10+:
#   make bench   -> creates .venv, installs gpu-trader with its dev extras, runs the benchmark
#                   (every case at standard sizes, a few minutes on 2 cores; make bench-full:
#                   the published sizes; make bench-quick: the CI smoke sizes)
#   make test    -> same install, runs the test suite (everything, as CI does)
#   make test-fast -> the same suite without the tests marked slow (simulator/PTX subprocesses,
#                   notebook, hadolint, the CLI run, the largest hypothesis and JAX gradient runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_ARGS ?=

.PHONY: install bench bench-full bench-quick test test-fast clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(BIN)/gpu-trader bench $(BENCH_ARGS)

bench-full: $(STAMP)
	$(BIN)/gpu-trader bench --full $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/gpu-trader bench --quick $(BENCH_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
