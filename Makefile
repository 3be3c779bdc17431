# The two set-up commands: `make run` and `make test`. Both create .venv when it is missing
# and install the package with the pinned versions in constraints.txt; a second call
# installs nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PREVIEWS ?= previews
DATASETS := colored_mnist double_colored_mnist wildlife_mnist

# Tests, CI and development read upstream files from a local mirror when one is beside the
# checkout; users without one download them. (The library itself never assumes this path.)
export CGN_DATA_MIRROR ?= $(wildcard $(abspath ../shared/data))

.PHONY: install run previews test lint format bench-data clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The main job: the quick reproduction of the paper's MNIST table on colored MNIST (data, CGN,
# counterfactuals, classifiers); resumable. Writes runs/quick/table2_quick.{json,md} and sheets.
run: install
	$(BIN)/cgn data prepare
	$(BIN)/cgn reproduce table2 --quick --datasets colored_mnist --run-dir runs/quick --out runs/quick/table2_quick.json

previews: install
	$(BIN)/cgn data prepare
	@mkdir -p $(PREVIEWS)
	@for name in $(DATASETS); do $(BIN)/cgn data preview $$name --out $(PREVIEWS)/$$name.png || exit 1; done
	$(BIN)/cgn data stats

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench-data: install
	$(BIN)/python benchmarks/data_throughput.py

clean:
	rm -rf $(VENV) $(PREVIEWS) .pytest_cache .ruff_cache
