"""Run a DVC command and write how long each stage took, as a markdown table.

    python tools/timed_repro.py -o reports/timing.md                      # runs `dvc repro`
    python tools/timed_repro.py -o reports/timing.md -- dvc exp run -S scale=smoke
    python tools/timed_repro.py -o reports/all.md --combine first.log second.log   # attempts of one run

Every line the command prints (stdout and stderr merged, passed through unchanged) is written
with its UTC arrival time to a raw log beside the table (`timing.log` for `-o timing.md`;
`--log` overrides). A stage starts at DVC's own line for it (dvc/stage/run.py, stage/__init__.py
and stage/cache.py in DVC 3.x):

    Running stage 'NAME':                                            -> ran
    Stage 'NAME' didn't change, skipping   ('NAME' ... for a .dvc)   -> skipped
    Stage 'NAME' is cached - skipping run, checking out outputs      -> cached (run cache)

and ends where the next one starts, or where the command exits: so a stage's time includes
DVC's own work after its command (hashing outputs, the lock file). The table is rewritten
(atomically) at every stage boundary, so a killed run still leaves one. The exit code is the
wrapped command's.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

# The stage name is quoted with '...'; `[^']+` would break on a quote inside it, which DVC forbids.
PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^Running stage '(?P<name>[^']+)':"), "ran"),
    (re.compile(r"^(?:Stage )?'(?P<name>[^']+)' didn't change, skipping"), "skipped"),
    (re.compile(r"^Stage '(?P<name>[^']+)' is cached - skipping run"), "cached"),
)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Stage:
    name: str
    status: str
    start_utc: datetime
    start: float                # time.monotonic() of its line
    end: float | None = None


def parse_stage(line: str) -> tuple[str, str] | None:
    """(name, status) if `line` is one of DVC's stage lines, else None."""
    text = ANSI.sub("", line).strip()
    for pattern, status in PATTERNS:
        m = pattern.match(text)
        if m:
            return m["name"], status
    return None


def render(cmd: list[str], started: datetime, t0: float, now: float, stages: list[Stage],
           log: Path, rc: int | None) -> str:
    """The markdown table; a stage still open (or the command still running) is timed to `now`."""
    fmt = "%Y-%m-%d %H:%M:%S"
    state = "still running" if rc is None else f"exit code {rc}"
    lines = [f"Command: `{shlex.join(cmd)}`, started {started.strftime(fmt)} UTC, {state}; "
             f"raw log: {log.name}", "", "| stage | start (UTC) | minutes | status |", "|---|---|---|---|"]
    for s in stages:
        end = s.end if s.end is not None else now
        lines.append(f"| {s.name} | {s.start_utc.strftime(fmt)} | {(end - s.start) / 60:.2f} | {s.status} |")
    counts = {k: sum(s.status == k for s in stages) for k in ("ran", "cached", "skipped")}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no stage"
    lines.append(f"| **total** | {started.strftime(fmt)} | {(now - t0) / 60:.2f} | {summary} |")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """A temporary file in the same folder renamed over `path`: a reader never sees half a table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def default_command() -> list[str]:
    """`dvc repro` with the dvc beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return [str(beside) if beside.exists() else (shutil.which("dvc") or "dvc"), "repro"]


def visible(raw: bytes) -> str:
    """A progress bar redraws itself after \r: keep its last visible state, one line in the log."""
    parts = raw.decode("utf-8", "replace").rstrip("\r\n").split("\r")
    return next((p for p in reversed(parts) if p.strip()), "")


def wait(proc: subprocess.Popen) -> int:
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the child got the Ctrl-C too: wait for it to stop
            continue


def run(cmd: list[str], out: Path, log_path: Path) -> int:
    # Unbuffered children: a stage script's prints arrive (and are stamped) when printed, not at exit.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started, t0 = datetime.now(timezone.utc), time.monotonic()
    stages: list[Stage] = []
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    except OSError as e:  # the command itself does not exist or is not executable
        print(f"timed_repro: cannot run {cmd[0]!r}: {e}", file=sys.stderr)
        return 127
    assert proc.stdout is not None
    with log_path.open("w", encoding="utf-8") as log:
        write_atomic(out, render(cmd, started, t0, t0, stages, log_path, None))
        while True:
            try:
                raw = proc.stdout.readline()
            except KeyboardInterrupt:  # the child got the Ctrl-C too: let it stop, keep its last words
                continue
            if not raw:
                break
            sys.stdout.buffer.write(raw)
            sys.stdout.flush()
            now_utc, now = datetime.now(timezone.utc), time.monotonic()
            line = visible(raw)
            log.write(f"{now_utc.isoformat(timespec='milliseconds')} {line}\n")
            log.flush()
            found = parse_stage(line)
            if found:
                if stages:
                    stages[-1].end = now
                stages.append(Stage(found[0], found[1], now_utc, now))
                write_atomic(out, render(cmd, started, t0, now, stages, log_path, None))
    rc = wait(proc)
    end = time.monotonic()
    if stages:
        stages[-1].end = end
    write_atomic(out, render(cmd, started, t0, end, stages, log_path, rc))
    return rc


FAILED = re.compile(r"^ERROR: failed to reproduce '(?P<name>[^']+)'")


def read_log(path: Path) -> tuple[list[tuple[datetime, str]], list[tuple[str, str, datetime]]]:
    """A raw log's (time, line) pairs, and its stage events (name, status, time); a stage DVC
    reports as failed gets the status 'failed'."""
    lines, events = [], []
    for raw in path.read_text(encoding="utf-8").splitlines():
        stamp, _, line = raw.partition(" ")
        try:
            when = datetime.fromisoformat(stamp)
        except ValueError:
            continue  # not a line this tool wrote
        lines.append((when, line))
        found = parse_stage(line)
        if found:
            events.append((found[0], found[1], when))
        elif FAILED.match(ANSI.sub("", line).strip()) and events:
            events[-1] = (events[-1][0], "failed", events[-1][2])
    if not lines:
        raise SystemExit(f"{path}: no timestamped lines (expected the raw log this tool writes)")
    return lines, events


def combine(logs: list[Path]) -> str:
    """One table for a run made of several attempts (a crash, a fix, the same command again, DVC
    skipping what finished): each stage's minutes in each attempt, the stage minutes in all and
    the wall time from the first attempt's start to the last one's end, gaps included."""
    fmt = "%Y-%m-%d %H:%M:%S"
    rows = ["| stage | attempt | start (UTC) | minutes | status |", "|---|---|---|---|---|"]
    ran = 0.0
    spans = []
    for i, path in enumerate(logs, 1):
        lines, events = read_log(path)
        spans.append((lines[0][0], lines[-1][0]))
        ends = [e[2] for e in events[1:]] + [lines[-1][0]]
        for (name, status, start), end in zip(events, ends):
            minutes = (end - start).total_seconds() / 60
            if status != "skipped":
                ran += minutes
            rows.append(f"| {name} | {i} | {start.strftime(fmt)} | {minutes:.2f} | {status} |")
    wall = (spans[-1][1] - spans[0][0]).total_seconds() / 60
    between = sum((b[0] - a[1]).total_seconds() for a, b in zip(spans, spans[1:])) / 60
    head = [f"Attempts: {', '.join(f'{i}. `{p.name}` ({a.strftime(fmt)} to {b.strftime(fmt)} UTC)' for i, (p, (a, b)) in enumerate(zip(logs, spans), 1))}.", "",
            f"**Wall time, first start to last end: {wall:.1f} minutes** ({between:.1f} of them between attempts); "
            f"stage minutes (every stage that ran, failed attempts included): {ran:.1f}.", ""]
    return "\n".join(head + rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, cmd = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s -o TABLE.md [--log LOG] [-- command ...] | -o TABLE.md --combine LOG [LOG ...]")
    ap.add_argument("-o", "--out", type=Path, required=True, help="markdown table to write")
    ap.add_argument("--log", type=Path, help="raw timestamped log (default: the table's path with .log)")
    ap.add_argument("--combine", type=Path, nargs="+", metavar="LOG",
                    help="run nothing: write one table from these raw logs, the attempts of one run in order")
    args = ap.parse_args(ours)
    if args.combine:
        write_atomic(args.out, combine(args.combine))
        return 0
    cmd = cmd or default_command()
    log = args.log or args.out.with_suffix(".log")
    if log.resolve() == args.out.resolve():
        ap.error(f"the log and the table are the same file ({log}); pass --log")
    return run(cmd, args.out, log)


if __name__ == "__main__":
    sys.exit(main())
