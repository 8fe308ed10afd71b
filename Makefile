# Podium: `make up` runs the console here; `make test` is the gate every change passes.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Where `make test-services` finds PostgreSQL and Redis; override on the command line.
DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
REDIS_URL ?= redis://127.0.0.1:6379/0

# The checks and tests keep their data here, never in ./var.
test lint: export PODIUM_DATA_DIR := $(CURDIR)/$(VENV)/test-data
test-services: export PODIUM_DATA_DIR := $(CURDIR)/$(VENV)/test-services-data

# Without Chromium the end-to-end tests skip themselves, saying so. `make test` runs on the
# embedded SQLite and Redis whatever the shell exports; `make test-services` on the real ones.
PYTEST := [ -x /usr/bin/chromium ] || export PODIUM_SKIP_BROWSER=1; $(BIN)/pytest

.PHONY: up demo install browser test test-services lint fmt bench clean

up: $(STAMP)
	$(BIN)/podium up

# The console plus simulated nodes of 8 GPUs each (PODIUM_DEMO_NODES, default 3).
demo: $(STAMP)
	PODIUM_DEMO_NODES=$${PODIUM_DEMO_NODES:-3} $(BIN)/podium up

install: $(STAMP)

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Podium needs Python 3.11 or newer: python3.11 or python3 not found"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "Podium needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V 2>&1)."; \
		echo "Install python3.11 or run: make PYTHON=/path/to/python3.11 ..."; exit 1; }
	@echo "Creating $(VENV) with $$($(PYTHON) -V 2>&1)"
	@$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing Podium and its development tools into $(VENV)"
	@$(BIN)/python -m pip install -qq --disable-pip-version-check -e '.[dev,train]'
	@touch $(STAMP)

browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "Installing Chromium for the browser tests (apt-get install chromium)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "************************************************************************"; \
			echo "* Chromium is missing: the browser (e2e) tests will be SKIPPED.        *"; \
			echo "* Install it with:  sudo apt-get install chromium                      *"; \
			echo "************************************************************************"; \
		fi; \
	fi

test: $(STAMP) browser
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python manage.py makemigrations --check --dry-run
	env -u DATABASE_URL -u REDIS_URL sh -c '$(PYTEST)'

test-services: $(STAMP) browser
	DATABASE_URL='$(DATABASE_URL)' REDIS_URL='$(REDIS_URL)' sh -c '$(PYTEST)'

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	@mkdir -p bench/results
	$(BIN)/python -m bench

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
