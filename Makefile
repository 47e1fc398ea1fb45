# Every user-facing command; the README explains each one.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOAD_VENV := .venv-load

.PHONY: install install-dev run test test-all stop-db load load-500 load-smoke sweep bench pgtune clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt requirements.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

## run: the service on PORT (default 8000): tables, 20 users if the table is empty, gunicorn
run: install
	$(BIN)/python -m scripts.create_tables
	$(BIN)/python -m scripts.seed_users 20 --if-empty
	exec $(BIN)/gunicorn app:api

## test: the default test suite (embedded PostgreSQL, plus TEST_DATABASE_URL when set)
test: install-dev
	$(BIN)/python -m pytest

## test-all: also the long, marked tests (soak, sweeps)
test-all: install-dev
	$(BIN)/python -m pytest -m "slow or not slow"

stop-db: install
	$(BIN)/python -m scripts.embedded_db stop

pgtune: install
	$(BIN)/python -m scripts.pgtune

clean:
	rm -rf $(VENV) $(LOAD_VENV) load/results reports/tmp
