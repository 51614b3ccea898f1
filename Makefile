# Two set-up commands: `make demo` and `make test`. Both create .venv with python3 on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit e2e install clean compat plugin

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m target_noojee.demo

lint: $(STAMP)
	$(BIN)/ruff check target_noojee tests benchmarks e2e plugin tools
	$(BIN)/ruff format --check target_noojee tests benchmarks e2e plugin tools

typecheck: $(STAMP)
	$(BIN)/mypy target_noojee

unit: $(STAMP)
	$(BIN)/pytest -q

# e2e: Meltano end to end (e2e/test_meltano.py): Meltano in its own venv, `meltano install` of
# meltano.yml's plugins (tap-spreadsheets from PyPI, this target), two `meltano run`s against
# noojee-sim on 127.0.0.1. Needs PyPI; takes about a minute from a fresh clone.
MELTANO_PIN   := meltano==4.4.1
UV_PIN        := uv==0.13.9
MELTANO_VENV  := e2e/.venv-meltano
MELTANO_STAMP := $(MELTANO_VENV)/.installed-$(MELTANO_PIN)-$(UV_PIN)

$(MELTANO_STAMP):
	rm -rf $(MELTANO_VENV)
	$(PYTHON) -m venv $(MELTANO_VENV)
	$(MELTANO_VENV)/bin/python -m pip install -q $(UV_PIN)
	UV_COMPILE_BYTECODE=1 $(MELTANO_VENV)/bin/uv pip install -q \
		--python $(MELTANO_VENV)/bin/python $(MELTANO_PIN)
	touch $(MELTANO_STAMP)

# e2e/test_postgres.py: the lead lifecycle with a real tap, meltanolabs-tap-postgres
# (e2e/postgres_project/meltano.yml), reading a CRM table from a PostgreSQL the test starts on
# 127.0.0.1 (e2e/postgres.py), then soft deletes from e2e/soft_deletes.singer. The `e2e` extra
# of pyproject.toml brings the server (the pgserver wheel: PostgreSQL's binaries, from PyPI)
# and psycopg; `make demo` needs neither. About a minute more, plugin installs included.
E2E_STAMP := $(VENV)/.installed-e2e

$(E2E_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,e2e]'
	touch $(E2E_STAMP)

e2e: $(STAMP) $(E2E_STAMP) $(MELTANO_STAMP)
	MELTANO_BIN=$(CURDIR)/$(MELTANO_VENV)/bin/meltano $(BIN)/pytest e2e -v -p no:cacheprovider

test: lint typecheck unit e2e

# compat (not part of `make test`): the unit suite on every pyenv interpreter within
# requires-python, one at a time, each in its own venv under /tmp/target-noojee-compat
# (tools/compat.py; PYENV_ROOT and COMPAT_DIR override). About 4-5 minutes an interpreter.
compat: $(STAMP)
	$(BIN)/python tools/compat.py

# plugin: rewrite the Meltano plugin definition (plugin/loaders/target-noojee--noojee.yml) and
# meltano.yml's loader settings from `target-noojee --about` after a setting changes.
plugin: $(STAMP)
	$(BIN)/python plugin/generate.py

clean:
	rm -rf $(VENV) $(MELTANO_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
