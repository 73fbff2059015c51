# Every target bootstraps its own virtual environment from the pinned requirements.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo serve test test-unit test-slow fuzz lint clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

## demo: seed a demo project with data, then serve the API on the embedded default (./var)
demo: venv
	$(BIN)/dataexport demo

serve: venv
	$(BIN)/dataexport serve

## test: the whole suite, on SQLite and (when reachable) PostgreSQL
test: venv
	$(BIN)/python -m pytest

test-unit: venv
	$(BIN)/python -m pytest tests/unit

## fuzz: the property and contract fuzz tests with fresh random examples (CI draws fixed ones)
fuzz: venv
	$(BIN)/python -m pytest tests/unit/test_fuzz_parsers.py tests/integration/test_fuzz_contract.py

test-slow: venv
	$(BIN)/python -m pytest -m slow

## lint: ruff's rules and formatting, then mypy (pyproject.toml [tool.mypy]: strict for domain, writers, storage)
lint: venv
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) var
