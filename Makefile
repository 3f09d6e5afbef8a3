# Sinergi: the interfaces other tools rely on (docs/architecture.md): install, run, test, demo, bench, proto.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SINERGI := $(BIN)/sinergi
DEV_PKI := certs/dev
DB ?= sqlite:///var/sinergi.db
# Key-encryption key for alert bodies at rest (docs/security.md); in production keep it away
# from the database and its backups.
KEK ?= var/sinergi.kek
# Requests per second per principal and the burst above it (docs/operations.md, "Limits"): the
# server's defaults; `make run RATE_LIMIT=0` turns the limit off to try a load by hand.
RATE_LIMIT ?= 20
RATE_BURST ?= 100
PROTOS := $(wildcard proto/sinergi/v1/*.proto)

.PHONY: install lock lock-upgrade lock-check run test lint typecheck proto proto-check pytest demo bench bench-quick clean \
	crash fuzz soak i18n

# Every package in .venv comes from uv.lock, hashes checked (`uv sync --frozen`); uv itself is
# pinned with hashes in requirements-uv.txt and lives in its own venv. No Python is downloaded.
TOOLS := .venv-uv
UV := UV_PYTHON_DOWNLOADS=never $(TOOLS)/bin/uv

$(TOOLS)/bin/uv: requirements-uv.txt
	$(PYTHON) -m venv --clear $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --isolated --require-hashes --no-deps --only-binary :all: \
	  -r requirements-uv.txt

$(VENV)/.installed: pyproject.toml uv.lock $(TOOLS)/bin/uv
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

# The CLI's languages (docs/i18n.md). Each clients/locale/<lang>/LC_MESSAGES/sinergi.po is
# committed; its .mo is compiled here (and by the package's build step, setup.py), never committed.
# `make i18n` extracts every message of the CLI (clients/locale/babel.cfg) and of click, merges
# them into each .po (new ones untranslated, changed ones fuzzy: both fail `make test` until
# translated), and compiles.
CATALOGS := $(wildcard clients/locale/*/LC_MESSAGES/sinergi.po)
MO_FILES := $(CATALOGS:.po=.mo)
CLICK_SOURCES = $$($(BIN)/python -c 'import click, pathlib; print(pathlib.Path(click.__file__).parent)')/*.py

install: $(VENV)/.installed $(MO_FILES)

%.mo: %.po $(VENV)/.installed
	$(BIN)/pybabel compile --statistics --domain sinergi --input-file $< --output-file $@

i18n: $(VENV)/.installed
	@pot=$$(mktemp --suffix=.pot) && trap 'rm -f "$$pot"' EXIT && \
	$(BIN)/pybabel extract --mapping-file clients/locale/babel.cfg --add-location file --project sinergi \
	  --output-file "$$pot" $$(find clients -name '*.py' | sort) $(CLICK_SOURCES) && \
	sed -i '/^#:/ s|[^ ]*/click/|click/|g' "$$pot" && \
	$(BIN)/pybabel update --input-file "$$pot" --output-dir clients/locale --domain sinergi \
	  --ignore-obsolete --ignore-pot-creation-date && \
	$(BIN)/pybabel compile --statistics --directory clients/locale --domain sinergi

# Refresh the lock on purpose: `make lock` after editing pyproject.toml's dependencies (keeps every
# other pin), `make lock-upgrade` to move every package to its newest allowed release (then
# `make proto`, since the generators are pinned by the lock too).
lock: $(TOOLS)/bin/uv
	$(UV) lock --python $(PYTHON)

lock-upgrade: $(TOOLS)/bin/uv
	$(UV) lock --upgrade --python $(PYTHON)

# `make test` refuses a lock that no longer matches pyproject.toml, and a venv that is not the lock.
lock-check: install
	@$(UV) lock --check --python $(PYTHON) --quiet || \
	  { echo "uv.lock does not match pyproject.toml (run make lock)"; exit 1; }
	@$(UV) sync --frozen --check --python $(PYTHON) --quiet || \
	  { echo ".venv differs from uv.lock (run make install)"; exit 1; }
	@echo "uv.lock matches pyproject.toml and .venv"

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

# The two development witnesses (docs/witness.md) run in the background, their state in their
# directories, and stop when the exchange in the foreground stops (Ctrl-C). `pki dev` made them.
DEV_WITNESSES := internal-affairs:50061 police:50062

# The development exchange may start a new ledger when var/ was deleted (--new-ledger; it has
# no effect on a ledger that has entries): without it, the exchange, which remembers the ledgers
# it signed (certs/dev/ledger.signed.json), takes an emptied database for a deleted ledger and
# refuses every write, as it must in production. Identities that witnessed the old ledger then
# say how to trust the new one (sinergi ledger trust).
run: install
	@mkdir -p var
	$(SINERGI) pki dev --dir $(DEV_PKI)
	$(SINERGI) db init --db $(DB)
	$(SINERGI) db kek --kek-file $(KEK)
	@pids=(); trap 'kill $${pids[@]} 2>/dev/null; wait $${pids[@]} 2>/dev/null' EXIT; \
	for witness in $(DEV_WITNESSES); do \
	  $(SINERGI) witness serve --dir $(DEV_PKI)/witness-$${witness%%:*} \
	    --listen 127.0.0.1:$${witness##*:} & pids+=($$!); \
	done; \
	$(SINERGI) serve --db $(DB) --pki $(DEV_PKI) --kek-file $(KEK) \
	  --rate-limit $(RATE_LIMIT) --rate-burst $(RATE_BURST) \
	  --witness-policy $(DEV_PKI)/witness-policy --print-next-steps --new-ledger

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -q -n auto  # one worker per core: every test has its own port, files and database

test: lock-check lint typecheck proto-check pytest

# The field's story against a real exchange in a temporary directory (clients/examples/demo.py).
demo: install
	$(BIN)/python -m clients.examples.demo

# Benchmarks, each beside its bare primitive (docs/performance.md); not part of `make test`.
bench: install
	$(BIN)/python -m bench

bench-quick: install
	$(BIN)/python -m bench --quick

# Reliability and hostile input (docs/reliability.md); short versions of both run in `make test`.
# SIGKILL a real `sinergi serve` CRASH_KILLS times per database under load, then check nothing
# acknowledged was lost; the figures are appended to var/crash-report.jsonl.
CRASH_KILLS ?= 20
crash: install
	@mkdir -p var
	SINERGI_CRASH_KILLS=$(CRASH_KILLS) SINERGI_CRASH_REPORT=var/crash-report.jsonl \
	  $(BIN)/pytest -q -s tests/integration/test_crash.py

# Every RPC of Exchange and AuditLedger with FUZZ_EXAMPLES generated requests (and as many raw).
FUZZ_EXAMPLES ?= 5000
fuzz: install
	SINERGI_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q tests/integration/test_fuzz.py

# A real server at 70% of its measured maximum publish rate, every agency subscribed, for
# SOAK_MINUTES: no error, nothing lost, memory and latency flat (bench/_soak.py).
SOAK_MINUTES ?= 10
soak: install
	$(BIN)/python -m bench._soak --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) $(TOOLS) var .mypy_cache .ruff_cache .pytest_cache
