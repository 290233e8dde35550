# Music RNN - the two commands are `make run` and `make test`; `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/quick.yaml
RUN_DIR ?=
PYTEST_ARGS ?=
TEST_WORKERS ?= auto  # pytest-xdist workers of `make test` (auto: one per core)

.DEFAULT_GOAL := help
.PHONY: help setup run test test-fast bench experiments lab clean-venv

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP) ## create .venv with the pinned packages (and FluidSynth where apt can install it)
	@bash scripts/install_system_packages.sh

run: setup ## the main job: the notebooks in order with CONFIG into outputs/runs/<timestamp>/ (or RUN_DIR; DATASET=, DATA_DIR= override its data)
	$(BIN)/musicrnn run --config $(CONFIG) $(if $(RUN_DIR),--run-dir $(RUN_DIR)) \
		$(if $(DATASET),--dataset $(DATASET)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

test: setup ## run the whole test suite on every core (installs everything it needs first)
	@bash scripts/install_system_packages.sh --browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: setup ## the tests without the slow ones (notebooks, training runs)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

bench: setup ## run the benchmarks (each ends with a RESULT line)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

experiments: setup ## train baseline, v1, v2, v3, v4 on one CPU budget each; write the experiment log
	$(BIN)/musicrnn experiments --config $(or $(EXPERIMENTS),configs/experiments-quick.yaml) $(if $(RUN_DIR),--out-dir $(RUN_DIR))

lab: setup ## open the notebooks in JupyterLab with the project's kernel
	JUPYTER_PREFER_ENV_PATH=1 $(abspath $(BIN))/jupyter lab --ServerApp.root_dir="$(CURDIR)/notebooks" \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean-venv: ## remove .venv (the next command makes it again)
	rm -rf $(VENV)
