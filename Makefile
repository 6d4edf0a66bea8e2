# Every target installs what it needs; `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile tools/install_extras.sh 2>/dev/null | sha256sum | cut -c1-12)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: all venv sysdeps protos lint lint-ruff test test-fast demo up down bench clean

all: test

$(STAMP): pyproject.toml Makefile tools/install_extras.sh
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@rm -f $(VENV)/.installed-*
	# torch first: pip takes 2.14.1 + torchvision 0.29.1 from the machine's local wheel cache.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[all,dev]"
	bash tools/install_extras.sh $(VENV)
	@touch $@

venv: $(STAMP)

# System packages the tests use: PostgreSQL server, Prometheus + promtool, Chromium for reports.
sysdeps:
	@bash tools/install_sysdeps.sh

protos: venv
	$(BIN)/python tools/gen_protos.py

lint: lint-ruff
	bash tools/buf.sh lint

lint-ruff: venv
	$(BIN)/ruff check services tests bench tools

test: venv sysdeps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: venv sysdeps
	$(BIN)/python -m likeness.client.demo

up: venv sysdeps
	$(BIN)/python tools/stack.py up

down:
	@test -x $(BIN)/python && $(BIN)/python tools/stack.py down || true

# Every benchmark's smoke form, outputs in build/bench-quick (full runs: bench/run_all.py, docs/benchmarks.md)
bench: venv
	PYTHONPATH=services:. $(BIN)/python bench/run_all.py --quick build/bench-quick

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
