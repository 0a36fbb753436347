# Developer commands. Every target creates or reuses the virtual environment in $(VENV).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.xling-installed
PYTEST_ARGS ?=

.PHONY: demo test test-setup lint format bench clean install

install: $(STAMP)

# torch==2.13.0 first: on these machines it resolves to a CPU build already on disk; a bare
# `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[models,bench,dev,ray]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/xling demo

test: $(STAMP) test-setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Headless Chromium (Debian's package) for the report's browser test. Idempotent: nothing to
# do when it is installed; without root, apt-get or a network it says so and the test skips.
test-setup:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	    >/dev/null 2>&1 || echo "test-setup: could not install chromium; the browser test skips"; \
	else echo "test-setup: chromium not installed (needs root and apt-get); the browser test skips"; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) bench/run.py --gemma

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
