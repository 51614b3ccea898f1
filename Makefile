# Two set-up commands: `make demo` and `make test`. Both create .venv with python3 on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m target_noojee.demo

lint: $(STAMP)
	$(BIN)/ruff check target_noojee tests benchmarks
	$(BIN)/ruff format --check target_noojee tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy target_noojee

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
