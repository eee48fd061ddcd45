# The commands people type. `make run` and `make test` are the whole set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export SPARK_LOCAL_IP ?= 127.0.0.1
export MLFLOW_DISABLE_TELEMETRY ?= true
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False

.PHONY: setup check-java test lint run ui screenshots up down bench clean

setup: $(STAMP)

# Re-installs only when the pinned set changes. torch goes first with pip so the CPU wheel on local disk
# (or the CUDA build a user chooses, see README) is used; pyspark is re-installed last because the Spark
# provider's pyspark-client silently overwrites pyspark's Python files with an older release.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required: install python3.11 (e.g. apt-get install python3.11 python3.11-venv)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3"
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(PY) -m pip install --quiet --force-reinstall --no-deps "pyspark==4.3.0"
	@touch $(STAMP)

check-java:
	@command -v java >/dev/null || { echo "Java 17 is required for Spark and was not found: sudo apt-get install -y openjdk-17-jre-headless"; exit 1; }

test: setup check-java
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check .

run: setup check-java
	$(PY) -m sessionrec.run

ui: setup
	$(PY) -m sessionrec.ui

# Headless Chromium screenshots of the DAG list and the latest runs (needs: apt-get install chromium).
screenshots: setup
	$(PY) -m sessionrec.screenshots

bench: setup check-java
	$(PY) -m bench.sessionize --quick
	$(PY) -m bench.train --quick
	$(PY) -m bench.score --quick

clean:
	rm -rf var

# The production stack (docker/README.md). Needs a Docker engine with the compose plugin.
COMPOSE := docker compose -f docker/compose.yaml --env-file docker/.env

up: docker/.env
	$(COMPOSE) up -d --build

down:
	$(COMPOSE) down

docker/.env:
	@echo "docker/.env is missing: cp docker/.env.example docker/.env, then fill in every secret (docker/README.md)"; exit 1
