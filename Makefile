# Two commands: `make demo` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DEMO_ARGS ?=

.PHONY: demo test test-slow test-all lint bench setup clean browser-deps

setup: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first (the CPU build that lies on disk) unless one is already importable,
# then the package with its dev extras; `torch>=2.3` in the metadata reuses it.
$(STAMP): pyproject.toml $(VENV)/bin/python
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/shaver demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

# Only the slow tests (end-to-end, browser rendering, distributed runs); CI runs them too.
test-slow: $(STAMP) browser-deps
	$(PY) -m pytest -q -m slow

test-all: test test-slow

browser-deps:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
