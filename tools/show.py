"""`make show`: `dvc exp show` narrowed to what a person compares, for a terminal.

DVC names a metric column by its file when two files share a key, so the row-per-file layout of
metrics/summary/ (which makes `dvc metrics show` one readable table) gives `dvc exp show` headers
like `metrics/summary/models/resnet50.json:acc` that no terminal fits. This reads the same data
from `dvc exp show --json` and prints it with short headers (`models/resnet50:acc`), only the
params and figures that differ between the experiments shown (DVC's `--only-changed`), and as
several tables when one would be wider than the terminal.

    python tools/show.py [--all] [--width 200] [-- <dvc exp show options, e.g. -A or --rev>]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

FIXED = 12  # the experiment name column's width


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.")
    return out


def _columns(data: dict[str, Any]) -> dict[str, Any]:
    cols = {}
    for path, p in (data.get("params") or {}).items():
        cols |= {k: v for k, v in _flat(p.get("data") or {}).items() if not isinstance(v, (list, dict))}
    for path, m in (data.get("metrics") or {}).items():
        short = path.removeprefix("metrics/summary/").removesuffix(".json")
        cols |= {f"{short}:{k}": v for k, v in _flat(m.get("data") or {}).items()}
    return cols


def _name(entry: dict[str, Any]) -> str:
    rev = entry.get("rev", "?")
    return entry.get("name") or (rev[:7] if len(rev) == 40 else rev)  # "workspace" is a rev too


def experiments(show_json: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(name, {column: value}) for the workspace, each commit and each experiment under it."""
    rows = []
    for commit in show_json:
        if commit.get("data"):
            rows.append((_name(commit), _columns(commit["data"])))
        for group in commit.get("experiments") or []:
            for rev in group.get("revs", []):
                if rev.get("data"):  # DVC names an experiment on its group, its revs only sometimes
                    rows.append((rev.get("name") or group.get("name") or _name(rev), _columns(rev["data"])))
    return rows


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def tables(rows: list[tuple[str, dict[str, Any]]], only_changed: bool, width: int) -> list[str]:
    cols = list(dict.fromkeys(c for _, r in rows for c in r))
    if only_changed and len(rows) > 1:
        cols = [c for c in cols if len({_cell(r.get(c)) for _, r in rows}) > 1]
    if not cols:
        return ["(nothing differs between the experiments shown; --all shows every column)"]
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for _, r in rows)) for c in cols}
    name_w = max(FIXED, *(len(n) for n, _ in rows))
    chunks: list[list[str]] = [[]]
    for c in cols:  # greedy: as many columns per table as the terminal holds
        used = name_w + sum(widths[x] + 2 for x in chunks[-1])
        if chunks[-1] and used + widths[c] + 2 > width:
            chunks.append([])
        chunks[-1].append(c)
    out = []
    for chunk in chunks:
        out.append(f"{'Experiment':<{name_w}}" + "".join(f"  {c:>{widths[c]}}" for c in chunk))
        out += [f"{n:<{name_w}}" + "".join(f"  {_cell(r.get(c)):>{widths[c]}}" for c in chunk) for n, r in rows]
        out.append("")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all", action="store_true", help="every column, not only those that differ")
    ap.add_argument("--width", type=int, default=int(os.environ.get("COLUMNS", 200)))
    ap.add_argument("dvc_args", nargs="*", help="passed to `dvc exp show` (after --)")
    args = ap.parse_args(argv)
    proc = subprocess.run(["dvc", "exp", "show", "--json", *args.dvc_args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return proc.returncode
    print("\n".join(tables(experiments(json.loads(proc.stdout)), not args.all, args.width)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
