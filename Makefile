# The two set-up commands of the README: `make demo` (main job) and `make test` (every test).
# Both create .venv on first use and install partialft into it; nothing else is needed.
# The demo installs only what it uses (the plots extra); the tests install every extra.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: demo test lint test-min

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/.demo-installed: pyproject.toml | $(BIN)/python
	$(PIP) -e ".[plots]"
	touch $@

$(BIN)/.test-installed: pyproject.toml | $(BIN)/python
	$(PIP) -e ".[test]"
	touch $@

demo: $(BIN)/.demo-installed
	$(BIN)/partialft demo

test: $(BIN)/.test-installed
	$(BIN)/lint-imports pyproject.toml
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(BIN)/.test-installed
	$(BIN)/ruff check src tests benchmarks

# Not in CI (it downloads a second torch): the lowest versions pyproject.toml allows, pinned in
# tests/lowest-versions.txt, in their own venv, running the tests not marked slow.
MIN_VENV ?= .venv-min
$(MIN_VENV)/.installed: pyproject.toml tests/lowest-versions.txt
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-c tests/lowest-versions.txt -e ".[test]"
	touch $@

test-min: $(MIN_VENV)/.installed
	OMP_NUM_THREADS=1 $(MIN_VENV)/bin/python -m pytest -q -n 2 --dist loadfile -m "not slow"
