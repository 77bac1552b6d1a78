# Two entry points for a fresh machine: `make demo` and `make test` (each sets itself up).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
DEMO_METHODS ?= softmax arpl-cs dias

.PHONY: demo test bench install clean

$(BIN)/osrbench: pyproject.toml $(addsuffix pyproject.toml,$(PLUGINS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,plot]" $(addprefix -e ,$(PLUGINS))
	touch $@

install: $(BIN)/osrbench

## Compare the three built-in methods on the embedded digits dataset over the 5 auroc splits.
demo: install
	$(BIN)/osrbench compare $(DEMO_METHODS) --dataset digits --splits 0-4 --out runs/demo --quiet

## The test suite (what CI runs).
test: install
	$(BIN)/python -m pytest -q

## Speed benchmarks (pytest-benchmark); see benchmarks/README.md.
bench: install
	$(BIN)/python -m pytest benchmarks -q --benchmark-columns=mean,ops,rounds

clean:
	rm -rf $(VENV) runs
