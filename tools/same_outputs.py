"""Do two runs of the pipeline write the same outputs? File by file, over every output that
both dvc.lock files declare, with the figures that measure wall time set aside.

The check behind `dvc commit` after a refactor: run the smoke pipeline before and after the
change; when every output both runs have is the same, the new code demonstrably writes what
the old code wrote, and the committed reference outputs can be recorded under it without a
rerun. Two runs of one commit differ only in wall-time fields (`minutes` and `seconds` in the
records and the training curves) and in Great Expectations' Data Docs (run timestamps), so
those are compared without them. Outputs only one side has (a new stage) are listed apart.

    python tools/same_outputs.py OLD_REPO NEW_REPO [--ignore PATH ...]
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import yaml

TIMING_KEYS = {"minutes", "seconds"}
TIMESTAMPED = ("reports/validation",)  # Data Docs: every page carries the run's time


def outputs(repo: Path) -> set[str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"] for st in lock["stages"].values() for o in st.get("outs", [])}


def _files(root: Path, rel: str) -> dict[str, Path]:
    p = root / rel
    if p.is_file():
        return {rel: p}
    return {f.relative_to(root).as_posix(): f for f in sorted(p.rglob("*")) if f.is_file()} if p.is_dir() else {}


def _untimed(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def same_file(a: Path, b: Path) -> bool:
    """Byte-identical, or equal once the wall-time fields of a JSON or CSV file are set aside."""
    x, y = a.read_bytes(), b.read_bytes()
    if x == y:
        return True
    if a.suffix == ".json":
        return _untimed(json.loads(x)) == _untimed(json.loads(y))
    if a.suffix == ".csv":
        rows = [[{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in csv.DictReader(io.StringIO(t.decode()))]
                for t in (x, y)]
        return rows[0] == rows[1]
    return False


def compare(old: Path, new: Path, ignore: set[str]) -> dict[str, list[str]]:
    outs_old, outs_new = outputs(old), outputs(new)
    result: dict[str, list[str]] = {"same": [], "changed": [], "only old": [], "only new": []}
    for rel in sorted((outs_old & outs_new) - ignore):
        if rel.startswith(TIMESTAMPED):
            continue
        fa, fb = _files(old, rel), _files(new, rel)
        for f in sorted(fa.keys() | fb.keys()):
            ok = f in fa and f in fb and same_file(fa[f], fb[f])
            result["same" if ok else "changed"].append(f)
    result["only old"] = sorted(outs_old - outs_new - ignore)
    result["only new"] = sorted(outs_new - outs_old - ignore)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--ignore", nargs="*", default=[], help="outputs whose change is intended")
    args = ap.parse_args(argv)
    r = compare(args.old, args.new, set(args.ignore))
    print(f"{len(r['same'])} files the same, {len(r['changed'])} changed; outputs only in "
          f"{args.old}: {len(r['only old'])}, only in {args.new}: {len(r['only new'])}")
    for label in ("changed", "only old", "only new"):
        for p in r[label]:
            print(f"  {label}: {p}")
    return 1 if r["changed"] else 0


if __name__ == "__main__":
    sys.exit(main())
