# The two set-up commands of the README: `make smoke` (or `make reference`) and `make test`.
# Each creates or reuses the virtual environment at .venv and installs the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Relative to the repository root (where DVC runs every stage), so params.yaml and dvc.lock
# record a path that holds on any machine with ../shared beside the clone.
SHARED_CIFAR := ../shared/data/cifar10-jpeg.tar.gz

# Offline machines: point the pipeline at ../shared's image-folder archive unless a source is
# already set. It goes in as a params override, so DVC sees (and records) which source was used.
ifeq ($(ADVHYBRID_CIFAR_SOURCE),)
  ifneq ($(wildcard $(SHARED_CIFAR)),)
    SOURCE_OVERRIDE := -S data.source=$(SHARED_CIFAR)
  endif
else
  SOURCE_OVERRIDE := -S data.source=$(ADVHYBRID_CIFAR_SOURCE)
endif

# OpenMP threads that spin while waiting starve any other job on the same cores.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: venv test test-fast smoke reference paper bench compare show clean-venv

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU/CUDA torch build this machine image ships; pip takes it from local disk.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	# --no-deps: see pyproject.toml (its requests pin would break DVC's urllib3)
	$(BIN)/pip install -q --no-deps 'torchattacks==3.5.1'
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/python -m pytest -q

# The edit-test loop: every test but the ones that run the pipeline through dvc (marked slow).
test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

smoke: venv
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc exp run -S scale=smoke $(SOURCE_OVERRIDE)

# The stage table (reports/stage_times.md, with its timestamped log) is written by the run itself.
reference: venv
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python tools/timed_repro.py -o reports/stage_times.md -- \
	  $(BIN)/dvc exp run -S scale=reference $(SOURCE_OVERRIDE)

paper: venv
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc exp run -S scale=paper $(SOURCE_OVERRIDE)

# A pull request's view: OLD (default main) against NEW (default the workspace), see tools/compare.py.
compare: venv
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python tools/compare.py $(or $(OLD),main) $(or $(NEW),workspace) -o reports/compare.md

# `dvc exp show` for a terminal: only what differs between the experiments, short headers, tables
# no wider than $$COLUMNS (default 200). SHOW_ARGS="--all" shows every column; "-- -A" every commit.
show:  # no `venv` prerequisite: it reads results, so it must never reinstall anything
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python tools/show.py $(SHOW_ARGS)

bench: venv
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/attack_throughput.py

clean-venv:
	rm -rf $(VENV)
