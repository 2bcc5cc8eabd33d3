# Firstline — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= examples/desk.yaml
RENDERED ?= build/asterisk
DAEMON_PID := build/acd.pid
DAEMON_LOG := build/acd.log
PYTEST_ARGS ?=
# The store tests create (and drop) their own database on this server.
export FIRSTLINE_TEST_POSTGRES ?= postgresql://postgres:postgres@127.0.0.1:5432/postgres

.PHONY: all deps venv pbx lint test test-fast fuzz demo demo-stop render clean

all: test

deps:
	@scripts/install-deps

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e '.[dev]'
	@touch $@

pbx: deps
	@asterisk/pbx install

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The whole suite, live Asterisk included.
test: deps venv pbx lint
	$(BIN)/pytest $(PYTEST_ARGS)

# Pure-logic tests only (no Asterisk), for a quick edit loop.
test-fast: venv
	$(BIN)/pytest -m "not live" $(PYTEST_ARGS)

# Long fuzzing of the AMI and FastAGI codecs with atheris, FUZZ_SECONDS each (fuzz/README.md).
FUZZ_SECONDS ?= 60
fuzz: venv
	@$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/pip install -q -e '.[fuzz]'
	@mkdir -p build/fuzz/ami build/fuzz/agi
	$(BIN)/python -m fuzz.fuzz_ami build/fuzz/ami tests/transcripts/ami \
		-max_total_time=$(FUZZ_SECONDS) -artifact_prefix=build/fuzz/ami-
	$(BIN)/python -m fuzz.fuzz_agi build/fuzz/agi tests/transcripts/agi \
		-max_total_time=$(FUZZ_SECONDS) -artifact_prefix=build/fuzz/agi-

render: venv pbx
	$(BIN)/acd init-secrets $(CONFIG)
	$(BIN)/acd check $(CONFIG)
	$(BIN)/acd render $(CONFIG) --out $(RENDERED) --sounds "$$(asterisk/pbx root)/usr/share/asterisk/sounds"

demo: deps venv pbx render
	@$(MAKE) --no-print-directory demo-stop >/dev/null
	asterisk/pbx start $(RENDERED)
	@mkdir -p build
	@nohup $(BIN)/acd run $(CONFIG) --asterisk-conf "$$(asterisk/pbx root)/etc/asterisk" \
		--asterisk-sounds "$$(asterisk/pbx root)/usr/share/asterisk/sounds" \
		>$(DAEMON_LOG) 2>&1 & echo $$! >$(DAEMON_PID)
	@$(BIN)/acd wait-ready $(CONFIG) --timeout 15
	@echo
	@echo "Firstline is running: Asterisk (asterisk/pbx status) and the daemon (log: $(DAEMON_LOG))."
	@echo "Place a test call into the hotline:   $(BIN)/acd call $(CONFIG)"
	@echo "Or register a softphone to 127.0.0.1:5060 as an agent of $(CONFIG)"
	@echo "  (user = the agent's endpoint, password in examples/secrets/), dial *21 to log in,"
	@echo "  and call the hotline from a second softphone."
	@echo "Watch the queues:                     asterisk/pbx cli 'queue show'"
	@echo "Edit $(CONFIG), then apply it live:    $(BIN)/acd reload $(CONFIG)"
	@echo "Stop everything:                      make demo-stop"

demo-stop:
	@if [ -f $(DAEMON_PID) ]; then kill $$(cat $(DAEMON_PID)) 2>/dev/null || true; rm -f $(DAEMON_PID); fi
	@asterisk/pbx stop

clean:
	rm -rf build .mypy_cache .ruff_cache .pytest_cache
