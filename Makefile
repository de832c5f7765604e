# tesla-podd: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test test-all wheel-check lint smoke buffers results table plots bench clean-outputs

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --no-cache-dir --upgrade pip
	$(VENV)/bin/pip install -q --no-cache-dir -e '.[dev,cluster,optuna]'
	touch $@

install: $(VENV)/.installed ## create .venv and install the package with dev tools, launchers and Optuna (pip install -e .[dev,cluster,optuna])

demo: install ## the whole pipeline on a small default (CIFAR-10; DATA=/folder/holding/cifar10 offline)
	$(PY) -m tesla_podd.train experiment=demo paths.data_dir=$(DATA) $(ARGS)

test: install ## the test suite (CPU, no slow/gpu tests)
	$(PY) -m pytest -m "not slow and not gpu" -q

test-all: install ## every test, slow ones included
	$(PY) -m pytest -q

wheel-check: install ## build the wheel, install it in a fresh venv outside the checkout, run tesla-podd --help and debug=smoke there
	PY=$(PY) bash scripts/wheel_check.sh

lint: install ## ruff
	$(VENV)/bin/ruff check tesla_podd tests scripts

smoke: install ## every method on fake data in seconds
	$(PY) -m tesla_podd.train -m debug=smoke method=random,mtt,tesla,rat_bptt,podd

buffers: install ## expert trajectories only: make buffers ARGS="dataset=cifar10 dataset.zca=kornia"
	$(PY) -m tesla_podd.train stages=[buffer] paths.data_dir=$(DATA) $(ARGS)

TABLE ?=
results: install ## TABLE=cpu|tesla_table1|...: that paper table from docs/results/ + outputs/ (cpu: also the README block); no TABLE: every run
	$(PY) scripts/collect_results.py $(if $(TABLE),--table $(TABLE)) $(ARGS)

table: install ## run every cell of a paper table: make table TABLE=tesla_table1 ARGS="paths.data_dir=/data" (--dry-run: print only)
	$(PY) scripts/run_table.py $(TABLE) $(ARGS)

plots: install ## overlay the curves of runs: make plots RUNS="outputs/multirun/<time>" (or several run folders)
	$(PY) scripts/plot_runs.py $(RUNS) $(ARGS)

bench: install ## speed benchmark, CPU, 2 threads (<=15 min on idle cores): docs/bench/speed_cpu.{json,png}
	$(PY) scripts/bench_speed.py --device cpu --threads 2 --json docs/bench/speed_cpu.json \
		--png docs/bench/speed_cpu.png $(ARGS)

.PHONY: gpu-check gpu-wheels
GPU_OUT ?= docs/bench/gpu
gpu-check: ## the GPU check, <= 8 min (docs/gpu.md): report in GPU_OUT=docs/bench/gpu; GPU_CHECK_STEPS=a,b reruns steps
	bash scripts/gpu_check.sh $(GPU_OUT) $(ARGS)

gpu-wheels: ## the project's non-torch wheels into .gpu-wheels/, for a GPU machine without internet (docs/gpu.md)
	bash scripts/gpu_wheels.sh

clean-outputs: ## delete outputs/ (runs, buffers, caches)
	rm -rf outputs/*
	touch outputs/.gitkeep
