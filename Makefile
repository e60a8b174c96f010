# The verbs: `make demo`, `make test` (lint, types, tests), `make lint`, `make verify IMAGE=...`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := docker-registry prometheus prometheus-alertmanager

.PHONY: test lint typecheck pytest deps venv clean run verify demo bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# As root on Debian, install the services the integration tests use; otherwise they skip
# loudly (and fail under CI=true).
deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	  systemctl disable --now docker-registry >/dev/null 2>&1 || true; \
	  systemctl disable --now prometheus prometheus-alertmanager prometheus-node-exporter >/dev/null 2>&1 || true; \
	fi

lint: venv
	$(BIN)/ruff check watcher tests $(wildcard bench)

typecheck: venv
	$(BIN)/mypy watcher

pytest: venv deps
	$(BIN)/pytest -q -ra

test: venv deps lint typecheck pytest

CONFIG ?= config/example.yaml
verify: venv
	$(BIN)/registry-watcher --log-format console verify -c $(CONFIG) $(IMAGE)

# The whole product on one machine: a registry, the daemon, a signed/unsigned population.
demo: venv deps
	$(BIN)/python -m watcher.testing.demo

# Benchmarks beside the naive loop and the floor (bench/README.md); figures, never pass/fail.
# Options go in BENCH_ARGS, e.g. make bench BENCH_ARGS="latency --duration 30".
bench: venv deps
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
