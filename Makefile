# crmsync developer entry points. `make test` and `make demo` work on a fresh clone
# of a machine with Python 3.11, Node 20 and make: they set everything up first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.crmsync-installed

.PHONY: setup test lint typecheck unit demo sandbox bench clean

setup: $(STAMP) node_modules/.crmsync-installed

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
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

unit: setup
	$(VENV)/bin/pytest -q

test: lint typecheck unit

demo: setup
	$(PY) -m simulators.demo

sandbox: setup
	$(VENV)/bin/crmsync sandbox up

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis
