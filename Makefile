# The two commands of the README: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-loaded test-fast bench soak venv clean dashboard

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## the whole system on loopback, with a live status view (Ctrl-C stops it)
demo: $(STAMP)
	$(BIN)/python -m tools.demo

## every test: unit, integration and end to end with real redis, DNS, Envoy and TLS
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

## the same suite with both cores busy beside it (stress-ng from Debian): no test may need an idle machine
test-loaded: $(STAMP)
	command -v stress-ng >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stress-ng)
	stress-ng --cpu 2 --timeout 3600s --quiet & pid=$$!; \
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; kill $$pid; wait $$pid 2>/dev/null; exit $$rc

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not e2e and not slow"

## regenerate deploy/grafana/flyxds.json from deploy/grafana/dashboard.py
dashboard: $(STAMP)
	$(BIN)/python -m deploy.grafana

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

## benchmarks (about 10 minutes on 2 cores): table, bench/results.json, docs/img/*.png, docs/performance.md
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run

## 10 minutes of churn with leader kills (not in CI)
soak: $(BENCH_STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf run .pytest_cache
