# Clover: `make demo` runs the whole thing on this machine; `make test` runs the test suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CLOVERCTL := $(VENV)/bin/cloverctl
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck unit integration bench up down status clean

setup:
	@bash stack/setup.sh

demo: setup
	@$(CLOVERCTL) local demo

lint: setup
	@echo "== ruff (lint, format check) =="
	@$(VENV)/bin/ruff check --output-format concise .
	@$(VENV)/bin/ruff format --check .

typecheck: setup
	@echo "== mypy clover/ =="
	@$(VENV)/bin/mypy clover/

test: setup lint typecheck
	@echo "== pytest =="
	@$(VENV)/bin/pytest $(PYTEST_ARGS)

unit: setup
	@$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

integration: setup
	@$(VENV)/bin/pytest -m "integration or spark" $(PYTEST_ARGS)

up: setup
	@$(CLOVERCTL) local up

down:
	@$(CLOVERCTL) local down

status:
	@$(CLOVERCTL) local status

clean: down
	rm -rf .clover
