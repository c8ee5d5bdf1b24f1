# Finetune Studio. Quick start: `make run` (the product), `make test` (the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
RUNTIME_STAMP := $(VENV)/.runtime-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
DEV_STAMP := $(VENV)/.dev-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
TRAIN_STAMP := $(VENV)/.train-$(shell cat requirements-train.txt | cksum | cut -d' ' -f1)

.PHONY: run test lint format bench venv dev-venv train-extra clean worker beat web

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Finetune Studio needs Python 3.11 or newer (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(RUNTIME_STAMP): $(VENV)/bin/python requirements.txt
	$(PIP) install --quiet -r requirements.txt
	@rm -f $(VENV)/.runtime-*; touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(PIP) install --quiet -r requirements-dev.txt
	@rm -f $(VENV)/.dev-*; touch $@

# The training extra (torch, transformers, peft; about 1 GB), part of `make run` and `make test`: torch first,
# pinned, so pip takes the CPU build.
$(TRAIN_STAMP): $(RUNTIME_STAMP) requirements-train.txt
	$(PIP) install --quiet "$$(grep -E '^torch==' requirements-train.txt)"
	$(PIP) install --quiet -r requirements-train.txt
	@rm -f $(VENV)/.train-*; touch $@

venv: $(RUNTIME_STAMP)
dev-venv: $(DEV_STAMP)
train-extra: $(TRAIN_STAMP)

## The whole product on http://$(HOST):$(PORT): SQLite, local storage, in-process tasks and live events,
## real LoRA fine-tunes (lora-sft) on the demo base. The first run installs the training extra (about 1 GB).
run: $(TRAIN_STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py ensure_admin
	@[ -f "$${DEMO_BASE_DIR:-$${VAR_DIR:-var}/demo-base}/config.json" ] || $(PY) manage.py build_demo_base
	@echo "Finetune Studio on http://$(HOST):$(PORT)/  (Ctrl-C stops it)"
	$(PY) -m uvicorn finetune_studio.asgi:application --host $(HOST) --port $(PORT) --timeout-graceful-shutdown 3

## Production processes (configure with environment variables, see .env.example).
web: venv
	$(PY) -m uvicorn finetune_studio.asgi:application --host 0.0.0.0 --port $(PORT) --workers $${WEB_WORKERS:-2}
worker: venv
	$(VENV)/bin/celery -A finetune_studio worker -Q $${CELERY_QUEUES:-default,evaluations,training} --loglevel INFO
beat: venv
	$(VENV)/bin/celery -A finetune_studio beat --loglevel INFO --schedule $${CELERY_BEAT_SCHEDULE_FILE:-var/celerybeat-schedule}

lint: dev-venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	DJANGO_SETTINGS_MODULE=finetune_studio.settings_test $(PY) manage.py check
	DJANGO_SETTINGS_MODULE=finetune_studio.settings_test $(PY) manage.py makemigrations --check --dry-run

format: dev-venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## Lint, system checks, then the whole test suite (PostgreSQL/Redis when they answer, SQLite otherwise), on one
## pytest-xdist worker per core, 8 at most (TEST_WORKERS=0 runs it in one process); each worker has its own
## database, Redis database and S3 server.
TEST_WORKERS ?= auto
test: lint $(TRAIN_STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --maxprocesses 8 --dist worksteal --durations=15 $(PYTEST_ARGS)

## Every benchmark under bench/; each prints one JSON object.
bench: dev-venv
	@for script in bench/bench_*.py; do echo "== $$script" >&2; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
