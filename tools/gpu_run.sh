#!/usr/bin/env bash
# Run the paper-scale pipeline inside a job that is killed at a known time (a SLURM allocation,
# a spot/preemptible instance, any scheduler with a wall-time limit), and stop it cleanly a
# margin before that time, so the next job picks up where this one stopped. docs/gpu.md says more.
#
#   tools/gpu_run.sh [DVC_EXP_RUN_ARG ...]     # dvc exp run -S scale=paper [ARG ...]
#   tools/gpu_run.sh -- COMMAND [ARG ...]      # any other command, under the same deadline
#
# The deadline, from the environment (set exactly one):
#   ADVHYBRID_DEADLINE=T       T: the moment the job will be killed, in seconds since the epoch
#                              (e.g. $(date -d '2030-01-01 18:00' +%s))
#   ADVHYBRID_WALLTIME_S=N     N: the job is killed N seconds after this script starts
# Other settings:
#   ADVHYBRID_STOP_MARGIN_S    seconds before the deadline at which the pipeline is stopped
#                              (default 300)
#   ADVHYBRID_STOP_GRACE_S     seconds the pipeline gets to exit after SIGINT before SIGTERM, then
#                              10 s more before SIGKILL (default 120; must be below the margin)
#   ADVHYBRID_CIFAR_SOURCE     the CIFAR-10 source, passed as -S data.source=... (as `make paper`)
#   VENV                       virtual environment whose bin/ goes first on PATH, so dvc.yaml's
#                              `python` is the project's (default .venv, used when it exists)
#   ADVHYBRID_CHECKPOINT_EVERY epochs between classifier checkpoints (default here 5; the last
#                              epoch is always written); TQDM_MININTERVAL (default here 30 s)
#
# The command runs in its own process group; at the stop time (or when this script receives
# SIGTERM or SIGINT, e.g. from `scancel`, a preemption notice, or SLURM's --signal=B:TERM@... when
# the batch script execs this one) the whole group gets SIGINT, as Ctrl-C in a terminal would:
# DVC records no unfinished stage, finished stages stay in dvc.lock, and training checkpoints
# (written atomically) stay in checkpoints/. (A script started with `&` by a non-interactive
# shell ignores SIGINT, and so does its command: then the SIGTERM after the grace period stops it.)
#
# Exit status: the command's own (0: the pipeline finished); 75 stopped before the deadline,
# resubmit the same job to continue; 2 nothing started (bad arguments or settings, or no time
# left before the stop time).
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
usage: ADVHYBRID_DEADLINE=<epoch seconds> tools/gpu_run.sh [DVC_EXP_RUN_ARG ...]
       ADVHYBRID_WALLTIME_S=<seconds>    tools/gpu_run.sh [-- COMMAND [ARG ...]]
  without a command: dvc exp run -S scale=paper [DVC_EXP_RUN_ARG ...]
  optional: ADVHYBRID_STOP_MARGIN_S (default 300), ADVHYBRID_STOP_GRACE_S (default 120)
  exit: the command's status; 75 stopped before the deadline (resubmit); 2 nothing started
EOF
}
fail() { echo "gpu_run: $*" >&2; usage; exit 2; }
now() { date +%s; }
T0=$(now)
when() { date -d "@$1" '+%F %T %Z' 2>/dev/null || echo "$1"; }
log() { printf '[gpu_run %s] %s\n' "$(date '+%F %T')" "$*"; }
whole() { [[ $2 =~ ^[0-9]+$ ]] || fail "$1=$2: expected a whole number of seconds"; }

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
[ "$*" != "--" ] || fail "nothing after --: expected a command"

cd "$(dirname "$0")/.."

# --- the deadline and the stop time ------------------------------------------------------------
deadline=${ADVHYBRID_DEADLINE:-}
walltime=${ADVHYBRID_WALLTIME_S:-}
if [ -n "$deadline" ] && [ -n "$walltime" ]; then
  fail "set ADVHYBRID_DEADLINE or ADVHYBRID_WALLTIME_S, not both"
elif [ -n "$deadline" ]; then
  whole ADVHYBRID_DEADLINE "$deadline"
elif [ -n "$walltime" ]; then
  whole ADVHYBRID_WALLTIME_S "$walltime"
  deadline=$((T0 + walltime))
else
  fail "no deadline: set ADVHYBRID_DEADLINE (seconds since the epoch) or ADVHYBRID_WALLTIME_S (seconds from now)"
fi
margin=${ADVHYBRID_STOP_MARGIN_S:-300}
grace=${ADVHYBRID_STOP_GRACE_S:-120}
whole ADVHYBRID_STOP_MARGIN_S "$margin"
whole ADVHYBRID_STOP_GRACE_S "$grace"
[ "$grace" -lt "$margin" ] || fail "ADVHYBRID_STOP_GRACE_S=$grace must be below ADVHYBRID_STOP_MARGIN_S=$margin"
stop_at=$((deadline - margin))
if [ "$stop_at" -le "$(now)" ]; then
  echo "gpu_run: the stop time ($(when "$stop_at"): deadline $(when "$deadline") less a margin of ${margin}s) has passed; nothing started" >&2
  exit 2
fi

# --- the command -------------------------------------------------------------------------------
VENV=${VENV:-.venv}
[[ $VENV == /* ]] || VENV=$PWD/$VENV
[ -x "$VENV/bin/python" ] && export PATH="$VENV/bin:$PATH"
export PYTHONUNBUFFERED=${PYTHONUNBUFFERED:-1}   # stage logs reach the job's log as they are written
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-30}   # a progress line every 30 s, not every 2 s, in the log
# A checkpoint every 5th epoch (and the last): a full-width ResNet-50's is 282.5 MB, its epoch a
# few seconds on a GPU; a stop then loses at most 4 epochs of the model in training.
export ADVHYBRID_CHECKPOINT_EVERY=${ADVHYBRID_CHECKPOINT_EVERY:-5}
if [ "${1:-}" = "--" ]; then
  shift
  cmd=("$@")
else
  command -v dvc >/dev/null || fail "no dvc on PATH (and no $VENV/bin/dvc): install the project first (docs/gpu.md)"
  cmd=(dvc exp run -S scale=paper)
  [ -n "${ADVHYBRID_CIFAR_SOURCE:-}" ] && cmd+=(-S "data.source=$ADVHYBRID_CIFAR_SOURCE")
  cmd+=("$@")
  if [ -z "${ADVHYBRID_DEVICE:-}" ]; then   # the paper scale wants a GPU: say which, or stop here
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    python -c 'import sys, torch
ok = torch.cuda.is_available()
print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPUs", torch.cuda.device_count() if ok else 0)
sys.exit(0 if ok else 1)' || fail "this Python's torch sees no GPU (a CPU build of torch, or no GPU in the job); set ADVHYBRID_DEVICE to run anyway"
  fi
fi

log "deadline $(when "$deadline"); the pipeline is stopped at $(when "$stop_at") (${margin}s before)"
log "running: ${cmd[*]}"

# --- run, watch, stop --------------------------------------------------------------------------
signalled=
trap 'signalled=TERM' TERM
trap 'signalled=INT' INT
# A job started with SIGINT ignored (`nohup ... &`, a shell without job control) hands that on to
# every child, and the SIGINT below would do nothing; GNU env gives the command the default back.
restore=()
env --default-signal=INT true 2>/dev/null && restore=(env --default-signal=INT)
set -m                           # the command gets a process group of its own (its id is $pid) ...
"${restore[@]}" "${cmd[@]}" </dev/null &
pid=$!
set +m                           # ... and what this script starts later does not
alive() { kill -0 "$pid" 2>/dev/null; }
group_alive() { kill -0 -- "-$pid" 2>/dev/null; }
wait_for() {  # wait_for SECONDS: until the group is gone or SECONDS have passed
  local until=$(($(now) + $1)) t
  while group_alive; do
    printf -v t '%(%s)T' -1
    [ "$t" -lt "$until" ] || break
    sleep 0.2
  done
}

stopped=
while alive; do
  if [ -n "$signalled" ]; then stopped="SIG$signalled received"; break; fi
  printf -v t '%(%s)T' -1        # the time without a fork: this loop turns 5 times a second
  if [ "$t" -ge "$stop_at" ]; then stopped="stop time reached"; break; fi
  sleep 0.2 & wait $! || true    # a trapped signal ends the wait at once
done
if [ -n "$stopped" ]; then
  log "$stopped: SIGINT to the pipeline (process group $pid); it has ${grace}s to exit"
  kill -INT -- "-$pid" 2>/dev/null || true
  wait_for "$grace"
  if group_alive; then
    log "still running after ${grace}s: SIGTERM"
    kill -TERM -- "-$pid" 2>/dev/null || true
    wait_for 10
  fi
  if group_alive; then
    log "still running: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
fi
rc=0
wait "$pid" || rc=$?

if [ "$rc" -eq 0 ]; then
  log "finished (exit 0) after $(($(now) - T0))s"
  exit 0
elif [ -n "$stopped" ]; then
  log "stopped before the deadline (the command exited $rc): resubmit the same job to continue;"
  log "finished stages are kept (dvc.lock), training resumes from checkpoints/"
  exit 75
fi
log "the command failed (exit $rc) after $(($(now) - T0))s"
exit "$rc"
