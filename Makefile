# Gatehouse developer commands. Two are all a newcomer needs: `make up` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF := .tools/node_modules/.bin/buf
PY_SOURCES := services/gatehouse clients/gatehouse scripts tests bench deploy/docker

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Gatehouse needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

$(BUF): .tools/package.json .tools/package-lock.json
	cd .tools && npm ci --silent --no-audit --no-fund
	@touch $@

install: $(STAMP) $(BUF) ## create .venv and install everything (Python packages, buf)

up: $(STAMP) ## start all five services (and the edge) with dev certificates; Ctrl-C stops
	$(BIN)/gatehouse certs >/dev/null
	$(BIN)/gatehouse up

health: $(STAMP) ## check every service's health
	$(BIN)/gatehouse health

proto: $(STAMP) ## regenerate Python code, .pyi stubs and the Envoy descriptor set from proto/
	$(BIN)/python scripts/protogen.py

proto-check: $(STAMP) $(BUF) ## fail if generated code is stale; buf lint; buf breaking vs the previous commit
	$(BIN)/python scripts/protogen.py --check
	$(BUF) lint
	$(BUF) format --diff --exit-code proto
	scripts/buf-breaking.sh

lint: $(STAMP) ## ruff (lint + format check)
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)

typecheck: $(STAMP) ## mypy --strict on our code
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix $(PY_SOURCES)
	$(BIN)/ruff format $(PY_SOURCES)
	$(BUF) format -w proto

test: install proto-check lint typecheck ## everything CI runs: codegen + buf checks, lint, types, all tests
	$(BIN)/pytest

clean: ## remove the venv, tools and local state
	rm -rf $(VENV) .tools/node_modules .tools/third_party .gatehouse .mypy_cache .ruff_cache .pytest_cache

.PHONY: help install up health proto proto-check lint typecheck format test clean
