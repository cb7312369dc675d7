# recsys developer commands. `make demo` and `make test` install whatever is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
MLFLOW_URI ?= sqlite:///mlruns.db

.PHONY: install demo test test-fast lint bench ui tune-dashboard clean

install: $(STAMP)

# torch goes in first, pinned to the CPU build on this machine's disk, so that nothing later
# resolves `torch` to a multi-GB CUDA wheel.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e ".[dev,onnx]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/recsys demo --config configs/demo.yaml

# The whole suite (what .ci/run calls).
test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

# The development loop: everything but the tests marked slow (MLflow server, browser, subprocess jobs,
# whole studies, real datasets, DDP).
test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" tests

lint: $(STAMP)
	$(VENV)/bin/ruff check recsys pipelines tests bench scripts
	$(VENV)/bin/ruff format --check recsys pipelines tests bench scripts
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/bench_prepare.py
	$(PY) bench/bench_train_epoch.py
	$(PY) bench/bench_train_epoch.py --precision bf16-mixed
	$(PY) bench/bench_large_catalog.py
	$(PY) bench/bench_recommend.py

# The MLflow UI on the default local store, http://127.0.0.1:$(PORT) (`make ui PORT=5001` for another).
# One worker: the default four kept dying under load on two cores, and one serves a person's browser.
# No job-queue workers (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false; `mlflow server` has no flag for it):
# they run GenAI jobs (trace scoring) that this project never submits.
# Screenshots for the README, from a fresh store: $(PY) scripts/screenshots.py --fresh configs/demo.yaml
PORT ?= 5000
UI_WORKERS ?= 1
ui: $(STAMP)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server --backend-store-uri $(MLFLOW_URI) \
		--default-artifact-root ./mlartifacts --host 127.0.0.1 --port $(PORT) --workers $(UI_WORKERS)

# optuna-dashboard on the tuning study storage (installs the `dashboard` extra on first use).
OPTUNA_STORAGE ?= sqlite:///optuna.db
tune-dashboard: $(STAMP)
	test -x $(VENV)/bin/optuna-dashboard || $(PIP) install -q -e ".[dev,dashboard]"
	$(VENV)/bin/optuna-dashboard $(OPTUNA_STORAGE) --host 127.0.0.1 --port 8080

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
