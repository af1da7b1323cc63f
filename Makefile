# catalog-tagger: `make demo` runs the main job on embedded defaults, `make test` runs the tests.
# Both create the virtual environment when it is missing (fast no-op when it is up to date).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.DEFAULT_GOAL := help
.PHONY: help venv browser demo demo-airflow test test-fast lint format bench gpu-carry clean services-stop

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	# torch is pinned to the CPU wheel on CPU machines (pyproject pins torch==2.13.0)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create/update the virtual environment (.venv)

browser: ## Install Debian's chromium + chromium-driver + CJK fonts when missing (browser tests of the pages)
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && fc-list :lang=zh | grep -q . || { \
	  echo "installing Debian's chromium, chromium-driver and fonts-noto-cjk (apt)"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver fonts-noto-cjk; }

demo: $(STAMP) ## Run the main job end to end on embedded defaults
	$(BIN)/tagger demo

demo-airflow: $(STAMP) ## The main job on a real Airflow deployment (scheduler + Celery worker on the local Redis)
	$(BIN)/tagger demo --airflow

test: $(STAMP) browser ## Run the whole test suite (unit, data, model, integration)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## Unit tests only
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## ruff format + autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) ## Run the CPU benchmarks in bench/ (minutes)
	$(BIN)/python bench/run_all.py

gpu-carry: $(STAMP) ## Write .gpu/ (bf16 encoder + Myntra) for the GPU check: device run of bench/gpu_check.sh
	$(BIN)/python bench/bench_gpu.py --prepare .gpu

services-stop: $(STAMP) ## Stop exactly what this home (.tagger) started: its Triton, the embedded Postgres
	$(BIN)/tagger services stop

clean: ## Remove the work directory (.tagger), keeps the venv
	-$(BIN)/tagger services stop
	rm -rf .tagger
