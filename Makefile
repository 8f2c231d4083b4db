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

# The torch build is the platform's (CPU or CUDA, with its nvidia-*/cuda-*/triton packages), so it is
# pinned here rather than in requirements.lock; both the venv and `make lock` install these first.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

$(BIN)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU/CUDA torch build this machine image ships; pip takes it from local disk.
	$(BIN)/pip install -q $(TORCH_PINS)
	# Every other dependency at the exact version requirements.lock pins (`make lock` refreshes it) ...
	$(BIN)/pip install -q -r requirements.lock
	# ... then the project itself, --no-deps so that nothing outside the lock comes in.
	$(BIN)/pip install -q --no-deps -e .
	# --no-deps: see pyproject.toml (its requests pin would break DVC's urllib3)
	$(BIN)/pip install -q --no-deps 'torchattacks==3.5.1'
	touch $@

# `make lock`: resolve requirements.lock again from pyproject.toml. A fresh venv outside the
# checkout gets the torch pins, then the project with its test extra (pip picks the newest
# versions pyproject.toml allows); that venv's `pip freeze`, less LOCK_SKIP, is the new lock.
# Run it after changing pyproject.toml's dependencies (tests/test_lock.py fails until you do),
# read `git diff requirements.lock`, and commit both. It downloads and installs everything (minutes).
LOCK_VENV ?= $(or $(TMPDIR),/tmp)/advhybrid-lock-venv
# Left out of the lock (matched against `pip freeze` lines, any case): the project itself, pip's
# own tools, the torch pins with the nvidia-*/cuda-*/triton packages of the platform's torch build,
# and torchattacks (installed with --no-deps above: its metadata pins requests~=2.25).
LOCK_SKIP := ^(advhybrid|pip|setuptools|wheel|torch|torchvision|torchattacks|triton)==|^(nvidia|cuda)[-_.]

.PHONY: lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q --upgrade pip
	$(LOCK_VENV)/bin/pip install -q $(TORCH_PINS)
	$(LOCK_VENV)/bin/pip install -q -e '.[test]'
	$(LOCK_VENV)/bin/pip freeze --exclude-editable > $(LOCK_VENV)/freeze.txt
	# Every line kept must be an exact name==version pin (no `name @ file://...` or VCS URL).
	bad=$$(grep -viE '$(LOCK_SKIP)' $(LOCK_VENV)/freeze.txt | grep -vE '^[A-Za-z0-9][A-Za-z0-9._-]*==[^ @]+$$' || true); \
	  if [ -n "$$bad" ]; then echo "make lock: not an exact pin: $$bad" >&2; exit 1; fi
	{ \
	  echo '# requirements.lock: the exact version of every package advhybrid and its test extra need,'; \
	  echo '# transitively, resolved together with $(TORCH_PINS). `make venv` installs it.'; \
	  echo '# Refresh it with `make lock` (after any change to the dependencies in pyproject.toml).'; \
	  echo '# Not in it, on purpose: advhybrid itself; pip, setuptools, wheel; torch and torchvision (pinned'; \
	  echo '# in the Makefile) with the nvidia-*, cuda-* and triton packages that come with the platform torch'; \
	  echo '# build; torchattacks (installed with --no-deps: its metadata pins requests~=2.25, see pyproject.toml).'; \
	  echo "# Resolved on Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version(), "(%s %s)" % (platform.system(), platform.machine()))')."; \
	  grep -viE '$(LOCK_SKIP)' $(LOCK_VENV)/freeze.txt | LC_ALL=C sort -f -t = -k 1,1; \
	} > requirements.lock.new
	mv requirements.lock.new requirements.lock
	rm -rf $(LOCK_VENV)

venv: $(BIN)/.installed

# Two pytest workers, a test file each at a time (so a module's fixture is built once): much of
# the suite waits on process start-up and dvc. The smoke pipeline the slow tests share is built
# once for both workers (tests/conftest.py: smoke_repo). TEST_WORKERS= runs in one process.
TEST_WORKERS ?= -n 2 --dist loadfile --no-loadscope-reorder

test: venv
	$(BIN)/python -m pytest -q $(TEST_WORKERS)

# The edit-test loop: the unit tests, without the ones that run the pipeline through dvc (slow)
# or start stage, torchrun or worker processes (integration); make test runs those too.
test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow and not integration" $(TEST_WORKERS)

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
