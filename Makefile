# Clover: `make demo` runs the whole thing on this machine; `make test` runs the test suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CLOVERCTL := $(VENV)/bin/cloverctl
PYTEST_ARGS ?=
IMAGES_ARGS ?=
# Every package mypy checks (strict, pyproject.toml); protos/ is generated and excluded there.
TYPED := clover collector clovisor jobs dashboard controller cloverctl sdc validation stack logstore

.PHONY: setup demo test lint typecheck unit integration bench up down status clean cluster-build cluster-test images images-test

setup:
	@bash stack/setup.sh

demo: setup
	@$(CLOVERCTL) local demo

lint: setup
	@echo "== ruff (lint, format check) =="
	@$(VENV)/bin/ruff check --output-format concise .
	@$(VENV)/bin/ruff format --check .

typecheck: setup
	@echo "== mypy $(TYPED) =="
	@$(VENV)/bin/mypy $(TYPED)

# Lint, types, the suite, then the cluster tests (stack/test.sh; CLOVER_CLUSTER_TESTS=0 leaves them out).
test: setup
	@PYTEST_ARGS="$(PYTEST_ARGS)" TYPED="$(TYPED)" bash stack/test.sh

unit: setup
	@$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

integration: setup
	@$(VENV)/bin/pytest -m "integration or spark" $(PYTEST_ARGS)

# The local one-node Kubernetes (stack/cluster): built by `make test` in the background, or here
# (about 15 minutes cold).
cluster-build: setup
	@$(PY) -m stack.cluster.build

cluster-test: setup
	@$(VENV)/bin/pytest -m cluster tests/cluster $(PYTEST_ARGS)

# OCI images of every part (stack/images): not part of setup (about ten minutes cold), needs root.
# IMAGES_ARGS: -r REPO, -t TAG, --only NAME ... (python -m stack.images.build --help)
images: setup
	@$(PY) -m stack.images.build $(IMAGES_ARGS)

images-test: setup
	@$(VENV)/bin/pytest -m images tests/images $(PYTEST_ARGS)

up: setup
	@$(CLOVERCTL) local up

down:
	@$(CLOVERCTL) local down

status:
	@$(CLOVERCTL) local status

clean: down
	rm -rf .clover
