# Two commands set everything up on a fresh Debian/Ubuntu machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the suite mostly waits on real peers in real time: three workers on two cores, a module per
# worker (its peers and ports stay together); PYTEST_ARGS= runs it serially
PYTEST_ARGS ?= -n 3 --dist loadfile

.PHONY: run test lint typecheck pytest peers bench bench-calls soak clean

$(BIN)/python:
	@tools/ensure-venv "$(PYTHON)" "$(VENV)"

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.installed-run

## make run: install and start the gateway on its embedded local provider (no key, no network)
run: $(VENV)/.installed-run
	$(BIN)/gateway serve $(ARGS)

## make test: dev install, real test peers, lint, then the whole suite
test: $(VENV)/.installed-dev peers lint pytest

peers:
	@tools/install-peers

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict gateway codecs/telcodecs
	$(BIN)/hadolint Dockerfile

pytest: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make bench: codec and media micro-benchmarks; they print figures, they do not pass or fail
bench: $(VENV)/.installed-dev
	@set -e; for b in benchmarks/bench_*.py; do [ "$$b" = benchmarks/bench_calls.py ] && continue; echo "== $$b"; $(BIN)/python $$b; done

## make bench-calls: bridged-call load test (issue 8): N SIP calls on one pinned gateway core;
## options with ARGS, e.g. make bench-calls ARGS="--calls 50,100 --profile transcoding --duration 30"
bench-calls: $(VENV)/.installed-dev
	@{ $(BIN)/python -c "import uvloop, matplotlib" && test -x $(BIN)/py-spy; } 2>/dev/null \
		|| $(BIN)/python -m pip install -q uvloop matplotlib py-spy
	$(BIN)/python benchmarks/bench_calls.py $(ARGS)

## make soak: memory held and GC pauses over 2,000 calls, 20 at a time (issue 13); ARGS as for
## bench-calls, e.g. make soak ARGS="--calls 500 --concurrent 20"
soak: $(VENV)/.installed-dev peers
	$(BIN)/python benchmarks/bench_soak.py $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache tests/artifacts
