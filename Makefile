# Two commands set everything up (see README):
#   make demo   installs into .venv from the lock file, then runs the demo (SQLite, file sender, local Prefect)
#   make test   installs into .venv from the lock file, then runs lint, type checks and every test
# make test-fast: lint, types and the quick tests (no Prefect server, browser, Prism or kill trials).
# make lock:      refresh uv.lock after changing pyproject.toml's dependencies.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv installs exactly what uv.lock pins; it is itself pinned and kept apart in .tools/
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/.prefect
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
# no network for interpreters: use the Python 3.11 this machine has
export UV_PYTHON_DOWNLOADS := never
# the CLI tests start many short processes: let Python keep its compiled modules
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-fast lint install lock clean

$(UV):
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "Python 3.11 is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync --frozen --extra dev --compile-bytecode --python "$$($(PYTHON) -c 'import sys; print(sys.executable)')"
	touch $(STAMP)

install: $(STAMP)

lock: $(UV)
	$(UV) lock

demo: $(STAMP)
	$(BIN)/ciclovita demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

test-fast: lint
	$(BIN)/pytest -m "not slow" -n 2 --dist worksteal

clean:
	rm -rf $(VENV) $(TOOLS) .prefect outbox ciclovita.db ciclovita.db-wal ciclovita.db-shm
