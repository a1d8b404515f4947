# LeanML's two commands: `make run` and `make test`. Each sets itself up on a
# fresh machine that has only Python 3.11: the virtual environment, the
# dependencies (re-installed only when a requirements file changed since the
# last install) and the database migrations.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# Two xdist workers on a two-core machine; each gets its own SQLite test file.
PYTEST_ARGS ?= -n 2

.DEFAULT_GOAL := help
.PHONY: help run test lint check migrate chromium

help:
	@echo "make run    start LeanML with the demo project on http://$(HOST):$(PORT)/ (PORT=... to change)"
	@echo "make test   run the test suite (PYTEST_ARGS=... to pass options to pytest)"
	@echo "make lint   ruff check and ruff format --check"
	@echo "make check  makemigrations --check and check --deploy with production settings"

$(PY):
	@test -n "$(PYTHON)" || { echo "Python 3.11 is needed: no python3.11 or python3 found." >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
		{ echo "LeanML needs Python 3.11; $(PYTHON) is $$($(PYTHON) --version)." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# The stamps are newer than the requirements they installed; make re-runs pip
# only when a requirements file is edited after the last install.
$(VENV)/.installed-run: requirements.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt requirements.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $(VENV)/.installed-run $@

migrate: $(VENV)/.installed-run
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py demo --login-url http://$(HOST):$(PORT)/login/
	$(PY) manage.py serve --host $(HOST) --port $(PORT) --beat

# The browser tests drive Debian's Chromium; without it they skip and say why.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium for the browser tests"; \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } || \
			echo "Could not install chromium: the browser tests will be skipped." >&2; \
	else \
		echo "No /usr/bin/chromium and not root: the browser tests will be skipped." >&2; \
	fi

test: $(VENV)/.installed-dev chromium migrate
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check: $(VENV)/.installed-run
	$(PY) manage.py makemigrations --check --dry-run
	DEBUG=0 ALLOWED_HOSTS=leanml.example.com \
		SECRET_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')" \
		$(PY) manage.py check --deploy --fail-level WARNING
