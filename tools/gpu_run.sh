#!/usr/bin/env bash
# One resumable slice (under 10 minutes) of the paper-scale pipeline on the lent GPU machine.
# docs/gpu.md says how to call it; tools/gpu_prepare.sh (run here first) makes .whl/ and .gpu/.
#
#   bash tools/gpu_run.sh [hydra override ...]    # on the device, from the repo root
#
# Every call: installs the carried wheels into /tmp/site (once per machine), refreshes the code
# in the work folder .gpu/work (ignored by git, so it stays on the warm machine between calls
# and is never overwritten by the working tree that travels), composes params.yaml with
# dvc.utils.hydra.compose_and_dump (what `dvc exp run -S` does; `dvc exp run` itself needs a
# git repository, which the tree sent there is not), then runs `dvc repro` (which uses
# params.yaml as is) for at most BUDGET_S seconds. A stage stopped at the limit is interrupted
# (SIGINT), writes nothing half-done, and the next call resumes: DVC skips the finished stages,
# and train_targets, train_gan and train@* restart after their last finished epoch
# (checkpoints/). Finally it packs what can come back ($OUT: at most 8 files of 16 MiB) into
# $OUT/results.tar.gz: dvc.lock, params.yaml, overrides.txt, metrics/, plots/, reports/results.md.
#
# Overrides: scale=paper and data.source=cifar10-jpeg.tar.gz (the carried .gpu/ archive) unless
# the arguments set their own, then the arguments. They are kept in .gpu/work/overrides.txt and
# reused by later calls without arguments; new arguments replace them (DVC then reruns only
# the stages whose params changed).
# Exit status: 0 the pipeline is complete; 3 not yet (call again); anything else an error.
#
# Environment: BUDGET_S (default 540) seconds for dvc repro in this call; PYTHON (default
# python3, the device's Python with PyTorch); OUT (set by the device tool; else .gpu/out).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/.gpu/work
OUT=${OUT:-$ROOT/.gpu/out}
BUDGET_S=${BUDGET_S:-540}
PYTHON=${PYTHON:-python3}
SITE=/tmp/site
T0=$(date +%s)
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/gpu_run.log") 2>&1
say() { printf '\n== [%4ss] %s\n' $(( $(date +%s) - T0 )) "$*"; }
die() { echo "gpu_run: $*" >&2; exit 1; }

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
# dvc.yaml's commands say `python`: make it the Python that has torch. A wrapper, not a
# symlink: that python3 is a venv's, and a symlink elsewhere would lose the venv's packages.
# (rm first: writing through an old symlink would write into the interpreter it points to)
mkdir -p /tmp/advhybrid-bin && rm -f /tmp/advhybrid-bin/python
printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v "$PYTHON")" >/tmp/advhybrid-bin/python
chmod +x /tmp/advhybrid-bin/python
export PATH=/tmp/advhybrid-bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 DVC_NO_ANALYTICS=1 TQDM_MININTERVAL=30
dvc() { "$PYTHON" -m dvc "$@"; }

say "work folder $WORK"
if [ -f "$WORK/dvc.lock" ]; then
  echo "resuming: $(grep -cE '^  [a-z_@0-9]+:$' "$WORK/dvc.lock") stage(s) in dvc.lock, $(ls "$WORK"/checkpoints/*/*.pt 2>/dev/null | wc -l) checkpoint(s)"
else
  echo "starting: no dvc.lock yet"
fi
# The code is refreshed every call (DVC reruns a stage whose code changed); outputs, DVC's
# cache and checkpoints/ stay. No pycache is written, so code folders hash the same every call.
for p in dvc.yaml conf src .dvcignore; do
  rm -rf "${WORK:?}/$p" && cp -a "$ROOT/$p" "$WORK/$p"
done
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null
# .dvc/config without its remotes (none is reachable from there; an s3 one would need dvc-s3),
# and without git (.git does not travel): DVC without SCM.
mkdir -p "$WORK/.dvc"
awk '/^\[/{skip = ($0 ~ /^\[.remote /)} !skip && !/^[[:space:]]*remote[[:space:]]*=/' "$ROOT/.dvc/config" >"$WORK/.dvc/config"
printf '[core]\n    no_scm = true\n' >"$WORK/.dvc/config.local"
cd "$WORK"
if [ -f "$ROOT/.gpu/cifar10-jpeg.tar.gz" ]; then
  ln -sfn ../cifar10-jpeg.tar.gz cifar10-jpeg.tar.gz
elif [ ! -d data/raw/cifar10 ]; then
  die "no .gpu/cifar10-jpeg.tar.gz: carry it (tools/gpu_prepare.sh puts it there)"
fi

say "params.yaml (dvc.utils.hydra.compose_and_dump, as dvc exp run -S)"
if [ $# -gt 0 ] || [ ! -f overrides.txt ]; then
  defaults=()   # scale=paper and the carried archive, unless the arguments name their own
  printf '%s\n' "$@" | grep -q '^scale=' || defaults+=("scale=paper")
  printf '%s\n' "$@" | grep -q '^data\.source=' || defaults+=("data.source=cifar10-jpeg.tar.gz")
  printf '%s\n' "${defaults[@]}" "$@" | grep -v '^$' >overrides.txt
fi
cat overrides.txt
"$PYTHON" - <<'EOF' || die "composing params.yaml failed"
import os
from pathlib import Path
from dvc.utils.hydra import compose_and_dump
overrides = Path("overrides.txt").read_text().splitlines()
compose_and_dump("params.yaml", os.path.abspath("conf"), None, "config", os.getcwd(), overrides)
EOF

say "dvc repro (at most ${BUDGET_S}s)"
dvc status 2>/dev/null | grep -E "^[a-z_@0-9]+:" | sed 's/^/  to run: /' || true
timeout -s INT -k 30 "$BUDGET_S" "$PYTHON" -m dvc repro
rc=$?
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
  say "stopped at the ${BUDGET_S}s limit: call again to resume"
fi

say "progress"
ls -l --time-style=+%H:%M:%S checkpoints/*/*.pt 2>/dev/null | awk '{print "  checkpoint", $6, $7}'
status=$(dvc status 2>&1)
echo "$status" | grep -E "^[a-z_@0-9]+:" | sed 's/^/  not done: /'
complete=0
[ -f dvc.lock ] && echo "$status" | grep -q "Data and pipelines are up to date" && complete=1

say "results -> $OUT/results.tar.gz"
keep=(); for p in dvc.lock params.yaml overrides.txt metrics plots reports/results.md; do [ -e "$p" ] && keep+=("$p"); done
if [ ${#keep[@]} -gt 0 ]; then
  tar czf "$OUT/results.tar.gz" "${keep[@]}"
  size=$(stat -c %s "$OUT/results.tar.gz")
  [ "$size" -lt $((16 * 1024 * 1024)) ] || { tar czf "$OUT/results.tar.gz" dvc.lock params.yaml metrics reports/results.md 2>/dev/null; echo "(over 16 MiB: plots left out)"; }
  tar tzf "$OUT/results.tar.gz" | sed 's/^/  /' | head -60
fi
echo "$status" >"$OUT/dvc_status.txt"

if [ $complete -eq 1 ]; then say "pipeline complete"; exit 0; fi
if [ $rc -eq 0 ] || [ $rc -eq 124 ] || [ $rc -eq 137 ]; then say "not complete yet: call again"; exit 3; fi
say "dvc repro failed (exit $rc): see the log above"; exit "$rc"
