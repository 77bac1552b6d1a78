# Two entry points for a fresh machine: `make demo` and `make test` (each sets itself up).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The built-in method plugins and the example third-party plugin(s), each its own distribution.
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml examples/*/pyproject.toml)))
DEMO_METHODS ?= softmax arpl-cs dias
DEMO_EPOCHS ?= 2
# Runs trained at once (the records are the same whatever the count: threads is a config key).
DEMO_JOBS ?= 2
# setuptools' note on every editable install ("Editable installation ... folders with the same name
# as your package") would be a newcomer's first screen, six times; osrbench itself names a folder
# that shadows it (cli.shadow_warning).
PIP := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip

.PHONY: demo demo-check test test-long kernels bench install clean

$(BIN)/osrbench: pyproject.toml $(addsuffix pyproject.toml,$(PLUGINS))
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".[plot]" $(addprefix -e ,$(PLUGINS))
	touch $@

$(VENV)/.test-extras: $(BIN)/osrbench
	$(PIP) install --quiet -e ".[test,plot,ray,browser,frames,tensorboard,mlflow,wandb]"
	touch $@

install: $(BIN)/osrbench

## Compare the three built-in methods on the embedded digits dataset over the 5 auroc splits.
demo: install
	$(BIN)/osrbench compare $(DEMO_METHODS) --dataset digits --splits 0-4 --epochs $(DEMO_EPOCHS) --metrics auroc,oscr,acc --out runs/demo --quiet --jobs $(DEMO_JOBS)
	$(BIN)/osrbench report --runs runs/demo --format html --output runs/demo/report.html

## The README's demo tables against the demo's output, character for character (CI runs it; the
## suite checks one of its runs on every `make test`): tests/test_readme_demo.py.
demo-check: demo $(VENV)/.test-extras
	OSRBENCH_DEMO_RUNS=runs/demo OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests/test_readme_demo.py -q

## The test suite (what CI runs): one worker per core (pytest-xdist), each test file on one worker
## (its module fixtures train once), one torch thread per worker (two per process on two cores
## contend for them).
test: $(VENV)/.test-extras
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist loadfile -m "not ray_cluster and not slow"

## The long end-to-end tests make test leaves out: real Ray instances and a two-node cluster on the
## loopback, kill -9 and resume, fresh virtual environments, tracker worker processes (about 5
## minutes; CI runs them after make test).
test-long: $(VENV)/.test-extras
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist loadfile -m "ray_cluster or slow"

## Kernel budgets per training batch (counts, not times: CI runs them); see benchmarks/test_kernels.py.
kernels: $(VENV)/.test-extras
	$(BIN)/python -m pytest benchmarks/test_kernels.py -q --benchmark-disable

## Speed benchmarks (pytest-benchmark); see benchmarks/README.md.
bench: $(VENV)/.test-extras
	$(BIN)/python -m pytest benchmarks -q --benchmark-columns=mean,ops,rounds

clean:
	rm -rf $(VENV) runs
