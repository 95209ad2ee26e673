# RT build entry points. Every target does its own set-up: on a fresh machine with only
# python3 (3.11, venv, pip) it builds .venv from requirements.lock first.
# Recipes call .venv/bin/python explicitly; no activated shell is needed.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON3 ?= python3
VENV    := $(CURDIR)/.venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip --disable-pip-version-check --no-input --quiet
STAMP   := $(VENV)/.rt-installed

# The seven installable packages (each has its own pyproject.toml).
PACKAGES := \
	libs/rtcommon \
	libs/rtclient \
	services/publisher-agent \
	services/sequencer \
	services/supervisor \
	services/archiver \
	services/info-service
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))
SCRIPTS := rt rt-sequencer rt-publisher-agent rt-supervisor rt-archiver rt-info-service

# Protobuf / gRPC stub generation: protos/rtproto/v1/x.proto -> libs/rtcommon/src/rtproto/v1/.
PROTO_SRC   := protos
PROTO_OUT   := libs/rtcommon/src
PROTO_FILES  = $(sort $(shell find $(PROTO_SRC) -name '*.proto'))
GENERATED   := \( -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' -o -name '*_pb2_grpc.pyi' \)
PROTOC      := $(PY) -m grpc_tools.protoc -I$(PROTO_SRC) \
	--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy \
	--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc
# $(call protoc_into,DIR): generate Python, gRPC and mypy stubs for every proto into DIR.
protoc_into  = $(PROTOC) --python_out=$(1) --grpc_python_out=$(1) \
	--mypy_out=$(1) --mypy_grpc_out=$(1) $(PROTO_FILES)
INIT_DOC    := """Generated from protos/, do not edit: run `make protos` to regenerate."""

SEEDS ?= 300
JOBS ?= 2

.PHONY: help venv run test browser protos check-protos lint format sim bench bench-peers bench-profile chaos clean

help:
	@echo "make run           run the system: a local 3-node cluster in DATA/ (Ctrl-C stops it);"
	@echo "                   NODES=1|3|5, DATA=folder, BASE_PORT=5000 change it"
	@echo "make test          all set-up, check-protos, lint, pytest over tests/, then sim SEEDS=300"
	@echo "make browser       install Debian's chromium for the console's browser test (as root)"
	@echo "make protos        regenerate the gRPC/protobuf stubs from protos/ into $(PROTO_OUT)/rtproto"
	@echo "make check-protos  fail if the committed stubs differ from what protos/ generates"
	@echo "make lint          ruff check + ruff format --check (generated stubs excluded)"
	@echo "make format        ruff format + ruff check --fix"
	@echo "make sim SEEDS=N   run the Raft and the whole-node simulations over N seeds each"
	@echo "make bench         run every bench/*.py and print its figures"
	@echo "make bench-peers   RT and NATS JetStream side by side: one table of both"
	@echo "make bench-profile where each sequencer's CPU goes at a steady 10,000 msg/s (py-spy)"
	@echo "                   (both install bench/tools.lock into .bench-tools/, not into .venv)"
	@echo "make chaos         a seeded fault run against a live 3-node cluster (SEED=N MINUTES=M;"
	@echo "                   as root its volumes are tmpfs, so the full-disk fault runs too)"
	@echo "make venv          build .venv from requirements.lock (every target does this itself)"
	@echo "make clean         remove .venv and build/test caches"

# ---------------------------------------------------------------------------------------------
# The virtualenv: built from scratch whenever the lock or a pyproject.toml changes.
# The lock is installed with --no-deps and then `pip check` runs, so the lock must be complete.
venv: $(STAMP)

$(STAMP): requirements.lock $(PYPROJECTS)
	@$(PYTHON3) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
		"RT needs Python >= 3.11; set PYTHON3=/path/to/python3.11")'
	rm -rf $(VENV)
	$(PYTHON3) -m venv $(VENV)
	$(PIP) install --no-deps -r requirements.lock
	$(PIP) install --no-deps --no-build-isolation $(addprefix -e ,$(PACKAGES))
	$(PIP) check
	touch $@

# ---------------------------------------------------------------------------------------------
# make run NODES=1 DATA=/tmp/rt BASE_PORT=7000: another size, folder or set of ports.
NODES ?= 3
DATA ?= DATA
BASE_PORT ?= 5000
run: $(STAMP)
	$(VENV)/bin/rt cluster up --nodes $(NODES) --data $(DATA) --base-port $(BASE_PORT)

test: $(STAMP) browser
	$(MAKE) check-protos
	$(MAKE) lint
	$(PY) -m pytest
	$(MAKE) sim SEEDS=$(SEEDS)

# Debian's Chromium, for the console's browser test (tests/integration/test_console.py).
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's chromium for the browser test"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
				chromium >/dev/null || { apt-get update -q >/dev/null && \
				DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
				chromium >/dev/null; }; \
		else \
			echo "make browser: install Debian's chromium (apt-get install chromium) as root;" \
				"the console's browser test needs it" >&2; exit 1; \
		fi; \
	fi

# ---------------------------------------------------------------------------------------------
protos: $(STAMP)
	@bad=$$(find $(PROTO_SRC) -name '*.proto' -not -path '$(PROTO_SRC)/rtproto/*'); \
	if [ -n "$$bad" ]; then echo "protos: every .proto must live under $(PROTO_SRC)/rtproto/:" \
		"$$bad" >&2; exit 1; fi
	mkdir -p $(PROTO_OUT)/rtproto
	find $(PROTO_OUT)/rtproto -type f $(GENERATED) -delete
	$(call protoc_into,$(PROTO_OUT))
	@for d in $$(find $(PROTO_OUT)/rtproto -type d -not -name __pycache__); do \
		if [ ! -e "$$d/__init__.py" ]; then \
			echo '$(INIT_DOC)' > "$$d/__init__.py"; echo "created $$d/__init__.py"; fi; \
	done

check-protos: $(STAMP)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir -p "$$tmp/generated" "$$tmp/committed"; \
	$(call protoc_into,$$tmp/generated); \
	(cd $(PROTO_OUT) && find rtproto -type f $(GENERATED) -not -path '*/__pycache__/*' \
		-exec cp --parents {} "$$tmp/committed" \;); \
	if ! diff -r "$$tmp/committed" "$$tmp/generated"; then \
		echo >&2; \
		echo "check-protos: FAILED: the stubs in $(PROTO_OUT)/rtproto differ from what" \
			"protos/ generates (diff above: committed vs generated)." >&2; \
		echo "Never edit generated files by hand: run 'make protos' and commit the result." >&2; \
		exit 1; \
	fi; \
	for d in $$(cd "$$tmp/generated" && find rtproto -type d); do \
		if [ ! -e "$(PROTO_OUT)/$$d/__init__.py" ]; then \
			echo "check-protos: FAILED: $(PROTO_OUT)/$$d/__init__.py is missing;" \
				"run 'make protos'." >&2; exit 1; fi; \
	done; \
	echo "check-protos: OK ($(words $(PROTO_FILES)) proto file(s), stubs up to date)"

# ---------------------------------------------------------------------------------------------
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# ---------------------------------------------------------------------------------------------
sim: $(STAMP)
	$(PY) -m rt_sequencer.raftsim --seeds $(SEEDS) --jobs $(JOBS)
	$(PY) -m rt_sequencer.nodesim --seeds $(SEEDS) --jobs $(JOBS)

# A bounded, seeded fault run against a live local cluster (tests/chaos/chaos.py says
# what it does); it prints its seed, and SEED= replays it.
MINUTES ?= 2
chaos: $(STAMP)
	$(PY) tests/chaos/chaos.py --minutes $(MINUTES) $(if $(SEED),--seed $(SEED))

# Runs bench/*.py in name order (files starting with '_' are helpers, not benchmarks).
bench: $(STAMP)
	@found=0; \
	for f in bench/*.py; do \
		[ -e "$$f" ] || continue; \
		case "$$(basename "$$f")" in _*) continue;; esac; \
		found=1; echo "== $$f"; $(PY) "$$f"; \
	done; \
	if [ "$$found" = 0 ]; then echo "bench: no bench/*.py scripts yet"; fi

# Tools of the benches only (bench/tools.lock: NATS JetStream for bench-peers, py-spy for
# bench-profile), installed into .bench-tools/, never into .venv: not RT's dependencies.
TOOLS := $(CURDIR)/.bench-tools
TOOLS_STAMP := $(TOOLS)/.installed
WITH_TOOLS := PYTHONPATH=$(TOOLS) PATH="$(TOOLS)/bin:$$PATH"

$(TOOLS_STAMP): bench/tools.lock $(STAMP)
	rm -rf $(TOOLS)
	$(PIP) install --no-deps --target $(TOOLS) -r bench/tools.lock
	touch $@

# RT and NATS JetStream side by side (bench/peers/peers_bench.py).
bench-peers: $(TOOLS_STAMP)
	$(WITH_TOOLS) $(PY) bench/peers/peers_bench.py

# Where each sequencer's CPU goes at a steady 10,000 msg/s (bench/profile/profile_bench.py).
bench-profile: $(TOOLS_STAMP)
	$(WITH_TOOLS) $(PY) bench/profile/profile_bench.py

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .hypothesis .ruff_cache
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d \
		-prune -exec rm -rf {} +
	find libs services -maxdepth 3 -type d \( -name build -o -name dist \) -prune \
		-exec rm -rf {} +
