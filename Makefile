# Two commands for a new machine with Python 3.11 and make: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run run-daphne run-prod require-secret-key test test-integration bench bench-smoke install install-dev migrate lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	$(BIN)/python manage.py migrate --noinput

# uvicorn (chatproject/serve_uvicorn.py), the faster server on the benchmark (docs/performance.md).
run: migrate
	$(BIN)/python -m chatproject.serve_uvicorn -b $(HOST) -p $(PORT) chatproject.asgi:application

# The same application on daphne (chatproject/serve.py: daphne with a JSON access log, ?token= redacted).
run-daphne: migrate
	$(BIN)/python -m chatproject.serve -b $(HOST) -p $(PORT) chatproject.asgi:application

# Production behind a TLS-terminating proxy (docs/deploy.md). The switch is set here, not by the caller.
# chatproject.serve_uvicorn is uvicorn logging through settings.LOGGING (JSON, tokens redacted). The
# client address for rate limits comes from X-Forwarded-For only when the peer is in TRUSTED_PROXIES
# (uvicorn's proxy headers are off: they would believe a header any client can forge).
run-prod: export DJANGO_ENV := production
run-prod: require-secret-key install
	$(BIN)/python manage.py check --deploy --fail-level WARNING
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	exec $(BIN)/python -m chatproject.serve_uvicorn -b $(HOST) -p $(PORT) chatproject.asgi:application

# First prerequisite of run-prod, so a missing key fails before anything is installed or started.
require-secret-key:
	@if [ -z "$$DJANGO_SECRET_KEY" ]; then \
		echo "make run-prod: DJANGO_SECRET_KEY must be set when DJANGO_ENV=production" \
			"(generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(50))')." >&2; \
		exit 1; \
	fi

test: install-dev
	$(BIN)/python -m pytest

# The benchmark (bench/run.py): figures to bench/results/ and docs/performance.md; see docs/performance.md.
bench: install-dev
	$(BIN)/python bench/run.py

bench-smoke: install-dev
	$(BIN)/python bench/run.py --smoke

# Two real nodes on real Redis and PostgreSQL, with fault injection (private instances); see integration/.
test-integration: install-dev
	$(BIN)/python -m pytest integration

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
