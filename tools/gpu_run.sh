#!/usr/bin/env bash
# The paper-scale pipeline on the lent GPU machine, over several device calls of under 10 minutes.
# docs/gpu.md says how to call it; tools/gpu_prepare.sh (run here first) makes .whl/ and .gpu/.
#
#   bash tools/gpu_run.sh [--first] [hydra override ...]    # on the device, from the repo root
#
# The device tool kills what a command leaves running, except a process in its own session
# (setsid), which lives on until the machine goes back, 30 s after a call returns. So the
# pipeline is not sliced: the first call starts `dvc repro` under setsid in .gpu/work and every
# call (the first too) waits on it, printing the log's new lines, until DEADLINE_S seconds after
# the call's own start (its setup included), then packs what can come back and returns:
#   0  the pipeline is complete (results in $OUT/results.tar.gz)
#   3  still running: call again at once (within 30 s, or the machine and the run are gone)
#   *  it failed (the log tail says where); a later call without --first starts it again,
#      and DVC skips the finished stages, train_* resume after their last epoch (checkpoints/)
# --first: before starting the paper run, run scale=smoke end to end on this machine in
# .gpu/smoke (every CUDA code path; DVC, Hydra and Great Expectations on the image's packages,
# whose versions it prints); the paper run starts only if that passed.
#
# Overrides: scale=paper and data.source=cifar10-jpeg.tar.gz (the carried .gpu/ archive) unless
# the arguments set their own, then the arguments; kept in .gpu/work/overrides.txt and reused by
# later calls without arguments. Arguments given while the run is alive are refused.
#
# Environment: REPRO_TARGETS (default: every stage) the stages `dvc repro` is given, kept in
# .gpu/work/targets.txt for later starts; DEADLINE_S (default 540) seconds from this call's start to its return, PACK_S
# (default 25) kept for packing; PYTHON (default python3, the device's Python with PyTorch);
# OUT (set by the device tool; else .gpu/out); GPU_ROOT (default .gpu) the work area.
T0=$(date +%s)     # first: the 10-minute limit counts from the command's start, not after setup
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
GPU_ROOT=${GPU_ROOT:-$ROOT/.gpu}
WORK=$GPU_ROOT/work
OUT=${OUT:-$GPU_ROOT/out}
DEADLINE_S=${DEADLINE_S:-540}
PACK_S=${PACK_S:-25}
PYTHON=${PYTHON:-python3}
SITE=/tmp/site
FIRST=0
[ "${1:-}" = "--first" ] && { FIRST=1; shift; }
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/gpu_run.log") 2>&1
say() { printf '\n== [%4ss] %s\n' $(( $(date +%s) - T0 )) "$*"; }
die() { echo "gpu_run: $*" >&2; exit 1; }
left() { echo $(( T0 + DEADLINE_S - PACK_S - $(date +%s) )); }
alive() { [ -f "$1/repro.pid" ] && kill -0 "$(cat "$1/repro.pid")" 2>/dev/null; }

setup_python() {
  [ -n "${PYTHON_READY:-}" ] && return 0
  PYTHON_READY=1
  say "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  nproc; "$PYTHON" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())' ||
    die "$PYTHON cannot import torch"
  say "python packages"
  if [ -f "$SITE/.installed" ]; then
    export PYTHONPATH=$SITE
  elif ! "$PYTHON" -c 'import dvc, great_expectations, hydra' 2>/dev/null; then
    echo "installing .whl/ into $SITE (a fresh machine: nothing of an earlier call is here)"
    ls .whl/*.whl >/dev/null 2>&1 || die "no .whl/*.whl here: run tools/gpu_prepare.sh on the dev machine and carry .whl"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl ||
      die "installing .whl/ into $SITE failed"
    touch "$SITE/.installed"
    export PYTHONPATH=$SITE
    "$PYTHON" -m pip check || echo "(pip check: a requirement above differs from the image's version; continuing)"
  fi
  "$PYTHON" -c 'import dvc.__main__, great_expectations, hydra, sklearn, matplotlib, pandas, tqdm, yaml' ||
    die "a package the stages need does not import (see above)"
  "$PYTHON" - <<'EOF'
import importlib
for m in ("torch", "numpy", "pandas", "scipy", "sklearn", "dvc", "great_expectations", "hydra", "torchattacks"):
    try:
        print(f"  {m} {importlib.import_module(m).__version__}")
    except Exception as e:  # noqa: BLE001
        print(f"  {m}: {e}")
EOF
  # dvc.yaml's commands say `python`: make it the Python that has torch. A wrapper, not a
  # symlink: that python3 is a venv's, and a symlink elsewhere would lose the venv's packages.
  mkdir -p /tmp/advhybrid-bin && rm -f /tmp/advhybrid-bin/python
  printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v "$PYTHON")" >/tmp/advhybrid-bin/python
  chmod +x /tmp/advhybrid-bin/python
  export PATH=/tmp/advhybrid-bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 DVC_NO_ANALYTICS=1 TQDM_MININTERVAL=30
  # a checkpoint every 5 epochs: a full-width ResNet-50's is 280 MB and an epoch a few seconds
  export ADVHYBRID_CHECKPOINT_EVERY=${ADVHYBRID_CHECKPOINT_EVERY:-5}
}

# prepare DIR override...: fresh code in DIR (outputs, cache, checkpoints stay), params.yaml composed
prepare() {
  local dir=$1; shift
  say "work folder $dir"
  mkdir -p "$dir"
  if [ -f "$dir/dvc.lock" ]; then
    echo "resuming: $(grep -cE '^  [a-z_@0-9]+:$' "$dir/dvc.lock") stage(s) in dvc.lock, $(ls "$dir"/checkpoints/*/*.pt 2>/dev/null | wc -l) checkpoint(s)"
  fi
  # DVC reruns a stage whose code changed; no pycache is written, so code hashes stay put.
  for p in dvc.yaml conf src .dvcignore; do
    rm -rf "${dir:?}/$p" && cp -a "$ROOT/$p" "$dir/$p"
  done
  find "$dir/src" -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null
  # .dvc/config without its remotes (none is reachable there) and without git (.git does not travel)
  mkdir -p "$dir/.dvc"
  awk '/^\[/{skip = ($0 ~ /^\[.remote /)} !skip && !/^[[:space:]]*remote[[:space:]]*=/' "$ROOT/.dvc/config" >"$dir/.dvc/config"
  printf '[core]\n    no_scm = true\n' >"$dir/.dvc/config.local"
  if [ -f "$GPU_ROOT/cifar10-jpeg.tar.gz" ]; then
    ln -sfn "$GPU_ROOT/cifar10-jpeg.tar.gz" "$dir/cifar10-jpeg.tar.gz"
  elif [ ! -d "$dir/data/raw/cifar10" ] && ! printf '%s\n' "$@" | grep -q '^data\.source='; then
    die "no $GPU_ROOT/cifar10-jpeg.tar.gz: carry it (tools/gpu_prepare.sh puts it there)"
  fi
  if [ $# -gt 0 ] || [ ! -f "$dir/overrides.txt" ]; then
    local defaults=()
    printf '%s\n' "$@" | grep -q '^scale=' || defaults+=("scale=paper")
    printf '%s\n' "$@" | grep -q '^data\.source=' || defaults+=("data.source=cifar10-jpeg.tar.gz")
    printf '%s\n' "${defaults[@]}" "$@" | grep -v '^$' >"$dir/overrides.txt"
  fi
  sed 's/^/  override: /' "$dir/overrides.txt"
  (cd "$dir" && "$PYTHON" - <<'EOF') || die "composing $dir/params.yaml failed"
import os
from pathlib import Path
from dvc.utils.hydra import compose_and_dump
overrides = Path("overrides.txt").read_text().splitlines()
compose_and_dump("params.yaml", os.path.abspath("conf"), None, "config", os.getcwd(), overrides)
EOF
}

# start DIR: `dvc repro [targets]` in its own session; its exit status lands in DIR/repro.rc
start() {
  local dir=$1
  rm -f "$dir/repro.rc" "$dir/repro.seen"
  : >"$dir/repro.log"
  [ -n "${REPRO_TARGETS+x}" ] && echo "$REPRO_TARGETS" >"$dir/targets.txt"
  local targets; targets=$(cat "$dir/targets.txt" 2>/dev/null || true)
  echo "dvc repro ${targets:-(every stage)}"
  # (cd first on its own: `cd && setsid ... &` would put the cd in the background job too)
  (cd "$dir" || exit 1
   setsid bash -c "'$PYTHON' -m dvc repro $targets >>repro.log 2>&1; echo \$? >repro.rc" </dev/null >/dev/null 2>&1 &
   echo $! >repro.pid)
  sleep 1
  say "dvc repro started in $dir (pid $(cat "$dir/repro.pid"))"
}

# follow DIR SECONDS: print the log's new lines until the run ends or SECONDS pass
follow() {
  local dir=$1 until=$(( $(date +%s) + $2 )) seen
  seen=$(cat "$dir/repro.seen" 2>/dev/null || echo 0)
  while :; do
    local size
    size=$(stat -c %s "$dir/repro.log" 2>/dev/null || echo 0)
    [ "$size" -gt "$seen" ] && tail -c +$((seen + 1)) "$dir/repro.log" | head -c $((size - seen)) | tr '\r' '\n' | grep -v '^\s*$' | tail -n 40
    seen=$size; echo "$seen" >"$dir/repro.seen"
    alive "$dir" || break
    [ "$(date +%s)" -ge "$until" ] && break
    sleep 5
  done
}

pack() {
  local dir=$1
  say "results -> $OUT/results.tar.gz"
  local keep=() p
  for p in dvc.lock params.yaml overrides.txt metrics plots reports/results.md reports/robustness.json; do
    [ -e "$dir/$p" ] && keep+=("$p")
  done
  if [ ${#keep[@]} -gt 0 ]; then
    tar czf "$OUT/results.tar.gz" -C "$dir" "${keep[@]}"
    [ "$(stat -c %s "$OUT/results.tar.gz")" -lt $((16 * 1024 * 1024)) ] ||
      { tar czf "$OUT/results.tar.gz" -C "$dir" dvc.lock params.yaml metrics reports 2>/dev/null; echo "(over 16 MiB: plots left out)"; }
    tar tzf "$OUT/results.tar.gz" | sed 's/^/  /' | head -40
  fi
  tail -c 200000 "$dir/repro.log" >"$OUT/repro_tail.log" 2>/dev/null || true
}

# finish DIR: exit status of this call from the run's state
finish() {
  local dir=$1
  pack "$dir"
  if alive "$dir"; then say "still running: call again at once (within 30 s)"; exit 3; fi
  local rc; rc=$(cat "$dir/repro.rc" 2>/dev/null || echo 1)
  if [ "$rc" = 0 ]; then say "pipeline complete"; exit 0; fi
  say "dvc repro failed (exit $rc): see the log above and $OUT/repro_tail.log"; exit "$rc"
}

SMOKE=$GPU_ROOT/smoke
smoke_passed() { [ "$(cat "$SMOKE/repro.rc" 2>/dev/null)" = 0 ]; }
if alive "$WORK"; then
  [ $# -eq 0 ] && [ $FIRST -eq 0 ] || die "a run is in progress in $WORK: call without arguments to wait on it"
  say "waiting on the run in progress (pid $(cat "$WORK/repro.pid"))"
else
  if [ $FIRST -eq 1 ] && ! smoke_passed; then
    if alive "$SMOKE"; then
      say "waiting on the smoke run in progress"
    else
      setup_python
      # only the source and the process count carry over to the smoke run: the paper's epochs would make it long
      prepare "$SMOKE" scale=smoke $(printf '%s\n' "$@" | grep -E '^(data\.source|dist\.nproc_per_node)=')
      REPRO_TARGETS= start "$SMOKE"   # every stage: the smoke run is there to try every code path
    fi
    follow "$SMOKE" "$(left)"
    if ! smoke_passed; then
      alive "$SMOKE" && say "smoke still running: call again with --first at once"
      finish "$SMOKE"
    fi
    say "smoke passed on this machine"
  fi
  setup_python
  prepare "$WORK" "$@"
  start "$WORK"
fi
follow "$WORK" "$(left)"
finish "$WORK"
