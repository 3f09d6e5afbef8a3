# Sinergi: the interfaces other tools rely on (DESIGN.md): install, run, test, demo, bench, proto.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SINERGI := $(BIN)/sinergi
DEV_PKI := certs/dev
DB ?= sqlite:///var/sinergi.db
PROTOS := $(wildcard proto/sinergi/v1/*.proto)

.PHONY: install run test lint typecheck proto proto-check pytest demo bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

# Generated code is committed (importable without a build step) and must match the .proto files.
PROTOC = $(BIN)/python -m grpc_tools.protoc -I proto \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	  --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc
protoc_into = $(PROTOC) --python_out=$(1) --mypy_out=quiet:$(1) \
	  --grpc_python_out=$(1) --mypy_grpc_out=quiet:$(1) $(PROTOS)

proto: install
	$(call protoc_into,proto)

proto-check: install
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && $(call protoc_into,$$tmp) && \
	for f in $$(cd "$$tmp" && find . -type f | sort); do \
	  cmp -s "$$tmp/$$f" "proto/$$f" || { echo "stale generated code: proto/$${f#./} (run make proto)"; exit 1; }; \
	done; echo "generated protobuf code is fresh"

run: install
	@mkdir -p var
	$(SINERGI) pki dev --dir $(DEV_PKI)
	$(SINERGI) db init --db $(DB)
	$(SINERGI) serve --db $(DB) --pki $(DEV_PKI) --print-next-steps

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -q

test: lint typecheck proto-check pytest

# Benchmarks, each beside its bare primitive (docs/performance.md); not part of `make test`.
bench: install
	$(BIN)/python -m bench

bench-quick: install
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
