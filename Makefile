# Quick start: `make run` (the whole stack with demo data) and `make test` (the whole suite).
SHELL := /bin/bash
# The first interpreter that really runs and is Python 3.11+ (pyenv shims exist for versions
# that are not selected, so `command -v` alone is not enough).
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	  $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV ?= .venv
PY := $(VENV)/bin/python
ENV_FILE ?= .env
WITH_ENV := set -a; [ -f $(ENV_FILE) ] && . ./$(ENV_FILE); set +a;

.PHONY: help install deps run migrate demo test test-unit lint bench fuzz screenshots clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@[ -n "$(PYTHON)" ] || { echo "make: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)"; exit 1; }
	@echo "creating $(VENV) with $(PYTHON) and installing dependencies ..."
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## create the virtualenv and install

$(ENV_FILE):
	@$(PY) -m oauthctl.envfile $(ENV_FILE)

deps: install $(ENV_FILE) ## find PostgreSQL, Redis, RabbitMQ at the configured URLs; start them if need be
	@$(WITH_ENV) $(PY) -m oauthctl.deps

run: deps ## migrate, create demo data, start all services (Ctrl-C stops them)
	@$(WITH_ENV) exec $(PY) -m oauthctl run

migrate: install $(ENV_FILE) ## apply pending migrations to DATABASE_URL
	@$(WITH_ENV) $(PY) -m oauthctl migrate

demo: install $(ENV_FILE) ## create (or refresh) the demo data and print it
	@$(WITH_ENV) $(PY) -m oauthctl demo

test: install ## the whole suite (starts PostgreSQL, Redis, RabbitMQ and installs Chromium if it can)
	@$(PY) -m oauthctl.deps --for test --browser
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install ## unit tests only: no I/O, no server needed, a few seconds (README "Tests")
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: install ## ruff and mypy over everything that ships
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy services libs oauthctl examples bench

fuzz: install ## Schemathesis over the whole public API (docs/api.md), longer than the run in `make test`
	@FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-200} FUZZ_TIMEOUT=$${FUZZ_TIMEOUT:-1800} TEST_TIMEOUT_SECONDS=0 $(PY) -m pytest tests/integration/test_schemathesis.py -s $(PYTEST_ARGS)

screenshots: install ## every page, zh and en, at 1280x800 and 390x844, into build/screenshots/ (Chromium)
	@$(PY) -m oauthctl.deps --for test --browser
	@$(PY) -m tests.support.screenshots $(SCREENSHOTS_DIR)

bench: install $(ENV_FILE) ## load benchmark vs node oidc-provider, prints a table (installs wrk and the peer if missing)
	@$(WITH_ENV) $(PY) -m bench $(BENCH_ARGS)

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
