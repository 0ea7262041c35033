# `make demo` and `make test` do all set-up on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-notice lint types pytest redis-server bench docs docs-serve clean

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "ctxlog needs Python >= 3.10"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $@

# pip's own progress shows: the first install of the dev extras takes minutes.
$(VENV)/.dev-installed: pyproject.toml | $(PY)
	@echo "Installing ctxlog with its dev extras into $(VENV) (the first time: a few minutes)"
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(PY) -m ctxlog demo

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# once for the oldest supported Python, once for 3.14 (the code that only runs there)
types: $(VENV)/.dev-installed
	$(PY) -m mypy
	$(PY) -m mypy --python-version 3.14

# coverage starts before pytest: ctxlog's own pytest plugin imports ctxlog
# while pytest starts, before a pytest plugin could begin measuring.
pytest: $(VENV)/.dev-installed redis-server
	$(PY) -m coverage erase
	$(PY) -m coverage run -m pytest $(PYTEST_ARGS)
	$(PY) -m coverage combine -q
	$(PY) -m coverage report --fail-under=90

test: test-notice lint types pytest

test-notice:
	@echo "make test: lint, types, then the whole suite with coverage: several minutes"
	@echo "(real servers and workers start on 127.0.0.1; PYTEST_ARGS=... narrows it)"

# the task-queue tests run against a real Redis: as root, Debian's package is installed
redis-server:
	@command -v redis-server >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

# the docs site (MkDocs, Material theme, API reference from the docstrings) into site/
docs: $(VENV)/.dev-installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

docs-serve: $(VENV)/.dev-installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --dev-addr 127.0.0.1:8000

bench: $(VENV)/.dev-installed
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov dist site
