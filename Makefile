# The two commands of the README:
#   make serve   set up, build the default model repository if missing, serve it
#   make test    set up (test tools included) and run the whole test suite
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
REPO ?= model_repository

.PHONY: serve test setup setup-test models protos lint typecheck pytest clean bench bench-quick \
	bench-before-after bench-before-after-quick

serve: setup
	$(PY) -m convserve build-defaults --repository $(REPO)
	$(PY) -m convserve serve --repository $(REPO)

test: setup-test
	$(MAKE) --no-print-directory lint typecheck pytest

setup:
	@scripts/bootstrap.sh serve

setup-test:
	@scripts/bootstrap.sh test

models: setup
	$(PY) -m convserve build-defaults --repository $(REPO)

protos:
	$(PY) scripts/gen_protos.py

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

pytest:
	$(VENV)/bin/python -m pytest -p no:cacheprovider

clean:
	rm -rf service/_proto/inference service/_proto/convserve .mypy_cache .ruff_cache .pytest_cache

bench-quick: setup-test
	$(PY) benchmarks/run.py --quick

bench: setup-test
	$(PY) benchmarks/run.py --full

# Issue #10's check: the pre-refactor commit b3c81df and this checkout, interleaved in one run.
bench-before-after-quick: setup-test
	$(PY) benchmarks/before_after.py --quick

bench-before-after: setup-test
	$(PY) benchmarks/before_after.py --full
