# QuantCore developer entry points. `make run` runs the pipeline; `make test` passes the tests.
# Both install what they need. Area-specific targets live in mk/*.mk.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
# quantcore.ownership for recipes: a directory is deleted only when quantcore created it.
OWNERSHIP := PYTHONPATH=$(CURDIR)/contracts $(PYTHON) -m quantcore.ownership
# Downloads and builds are cached outside the repo, keyed by version, so a second run is fast.
export QUANTCORE_CACHE ?= $(HOME)/.cache/quantcore
# Each mk/*.mk appends the targets `make test` needs before pytest runs (jars, binaries).
TEST_PREREQS :=
PYTEST_ARGS ?=

.PHONY: help setup cache proto lint typecheck test unit bench run clean
help:
	@echo "make run    - run the whole pipeline on this machine (installs what it needs)"
	@echo "make test   - lint, type-check and run every test suite (installs what it needs)"
	@echo "make setup  - create $(VENV) and install quantcore with its dev tools"
	@echo "make bench  - run the benchmarks in bench/ and print their figures"

setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml hatch_build.py $(wildcard proto/quantcore/v1/*.proto) \
  $(wildcard workloads/quantcore/feed/_*.c)
	test -x $(BIN)/python || { $(OWNERSHIP) claim $(VENV) VENV= && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# The cache is quantcore's own directory (quantcore.ownership): claimed, or refused when it
# holds anything else, before a recipe replaces something in it.
cache: setup
	@$(BIN)/python -c 'from quantcore.devservices.cache import cache_root; cache_root()'

# Regenerate gen/ from proto/ without reinstalling (pip install -e runs the same hook).
proto: setup
	$(BIN)/python hatch_build.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

include $(sort $(wildcard mk/*.mk))

test: setup lint typecheck $(TEST_PREREQS)
	$(BIN)/pytest $(PYTEST_ARGS)

# $(VENV) only when setup created it; the rest are this checkout's own generated files.
clean:
	-$(OWNERSHIP) remove $(VENV)
	rm -rf gen .dev .mypy_cache .ruff_cache .pytest_cache
