"""Compare two states of the pipeline the way a reviewer reads a pull request: the params that
changed, every metric that moved, the goals met or missed on each side, the robustness verdict,
the plots that changed (rendered side by side as PNG) and the command behind each side.

    python tools/compare.py                        # main against the workspace
    python tools/compare.py HEAD lr-2e-3           # a commit against an experiment
    python tools/compare.py main workspace -o reports/compare.md

Everything comes from DVC's own machinery: `dvc params diff --json`, `dvc metrics diff --json`,
`dvc plots diff --json --split` (which resolves dvc.yaml's plot definitions at each revision),
and `dvc.api.read` for the two files that are not metrics (the goals and the robustness details).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from advhybrid.evaluation.verdict import verdicts as verdict_rule  # noqa: E402
from advhybrid.io import atomic_path, save_text  # noqa: E402

WORKSPACE = "workspace"


class CompareError(Exception):
    """A revision that does not exist, or a DVC command that failed: the message says which."""


@dataclass(frozen=True)
class Side:
    name: str           # what the user typed
    rev: str | None     # a commit sha; None for the workspace
    kind: str           # "workspace", "experiment" or "commit"

    @property
    def label(self) -> str:
        if self.rev is None or self.rev.startswith(self.name):
            return self.name if self.rev is None else self.rev[:7]
        return f"{self.name} ({self.rev[:7]})"


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def resolve(root: Path, name: str) -> Side:
    """`workspace`, a git revision, or a DVC experiment name (refs/exps/.../<name>)."""
    if name == WORKSPACE:
        return Side(name, None, "workspace")
    proc = _git(root, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    if proc.returncode == 0:
        return Side(name, proc.stdout.strip(), "commit")
    refs = _git(root, "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps").stdout.split("\n")
    found = [line.split()[1] for line in refs if line and line.split()[0].rsplit("/", 1)[-1] == name]
    if len(found) == 1:
        return Side(name, found[0], "experiment")
    if len(found) > 1:
        raise CompareError(f"{name!r} names {len(found)} experiments in {root}; give a commit sha instead")
    raise CompareError(f"{name!r} is neither a git revision nor a DVC experiment in {root} "
                       f"(see `git log`, `dvc exp list`), nor {WORKSPACE!r}")


def dvc_json(root: Path, *args: str) -> Any:
    """Run `dvc <args> --json` with this interpreter's DVC; its stderr goes in the error."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], cwd=root,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompareError(f"`dvc {' '.join(args)}` failed in {root} ({proc.returncode}):\n{proc.stderr.strip()}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise CompareError(f"`dvc {' '.join(args)} --json` printed no JSON ({e}): {proc.stdout[:500]}") from None


def _revs(a: Side, b: Side) -> list[str]:
    """The positional revisions DVC's diff commands take: b omitted means the workspace."""
    return [a.rev, *([b.rev] if b.rev else [])]


def read_at(root: Path, side: Side, path: str) -> bytes | None:
    """A file as it is at one side (git- or DVC-tracked), or None if it is not there."""
    if side.rev is None:
        p = root / path
        return p.read_bytes() if p.is_file() else None
    import dvc.api
    try:
        return dvc.api.read(path, repo=str(root), rev=side.rev, mode="rb")
    except Exception:  # noqa: BLE001 (absent at that revision, or not in the cache: both mean "no data")
        return None


def _json_at(root: Path, side: Side, path: str) -> dict | None:
    raw = read_at(root, side, path)
    return json.loads(raw) if raw else None


# Where the goals record lives: reports/ since the flat metrics layout; metrics/ in older commits,
# which a pull request still compares against.
GOALS_PATHS = ("reports/goals.json", "metrics/goals.json")


def _goals_at(root: Path, side: Side) -> dict | None:
    return next((g for g in (_json_at(root, side, p) for p in GOALS_PATHS) if g), None)


# --- the sections ---------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def params_section(diff: dict[str, dict[str, dict]]) -> list[str]:
    rows = [[f"`{key}`", _fmt(d.get("old")), _fmt(d.get("new"))]
            for file, keys in diff.items() for key, d in sorted(keys.items())]
    if not rows:
        return ["## Params", "", "No param changed.", ""]
    return ["## Params", "", *_table(["param", "old", "new"], rows), ""]


def metrics_section(diff: dict[str, dict[str, dict]]) -> list[str]:
    """Changed metrics, one folded table per file (a file can hold hundreds of figures)."""
    lines, n_changed, same = [], 0, 0
    for file, keys in sorted(diff.items()):
        rows = []
        for key, d in sorted(keys.items()):
            old, new, delta = d.get("old"), d.get("new"), d.get("diff")
            if old == new:
                same += 1
                continue
            rows.append([f"`{key}`", _fmt(old), _fmt(new), f"{delta:+.4g}" if isinstance(delta, (int, float)) else "—"])
        if rows:
            n_changed += len(rows)
            lines += [f"<details><summary>{file}: {len(rows)} changed</summary>", "",
                      *_table(["metric", "old", "new", "change"], rows), "", "</details>", ""]
    if not n_changed:
        return ["## Metrics", "", f"No metric changed ({same} compared).", ""]
    return ["## Metrics", "", f"{n_changed} metrics changed, {same} did not.", "", *lines]


def goals_section(ga: dict | None, gb: dict | None, a: Side, b: Side) -> list[str]:
    if not ga and not gb:
        return []
    def cell(g: dict | None, name: str) -> str:  # noqa: E306
        if not g or name not in g:
            return "—"
        x = g[name]
        return f"{'met' if x['met'] else '**missed**'} ({_fmt(x['worst'])}, {x['worst_model']})"
    names = list(dict.fromkeys([*(ga or {}), *(gb or {})]))
    rows = [[n, _fmt((gb or ga)[n]["goal"] if n in (gb or ga) else None), cell(ga, n), cell(gb, n)] for n in names]
    return ["## Goals (reports/goals.json)", "",
            *_table(["goal", "target", f"{a.label}: status (worst, model)", f"{b.label}: status (worst, model)"], rows), ""]


def verdicts(details: dict | None) -> dict[str, str]:
    """Per defended model: does the Hybrid defence hold under white-box attack (the report's rule)."""
    return verdict_rule(details) if details else {}


def verdict_section(va: dict[str, str], vb: dict[str, str], a: Side, b: Side) -> list[str]:
    if not va or not vb:
        missing = [s.label for s, v in ((a, va), (b, vb)) if not v]
        return ["## Robustness verdict", "",
                f"Not compared: no robustness study (reports/robustness.json) on {' and '.join(missing)}.", ""]
    rows = [[m, va.get(m, "—"), vb.get(m, "—")] for m in dict.fromkeys([*va, *vb])]
    return ["## Robustness verdict (PGD + AutoAttack 8/255 against the same-sources control, paired)", "",
            *_table(["model", a.label, b.label], rows), ""]


# --- plots ----------------------------------------------------------------------------------------

def _rows_by_rev(item: dict) -> dict[str, list[dict]]:
    rows = item.get("anchor_definitions", {}).get("<DVC_METRIC_DATA>", [])
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["rev"], []).append({k: v for k, v in r.items() if k != "rev"})
    return out


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _draw(ax, rows: list[dict], x: str, y: str, template: str) -> None:
    """One revision's data on one axis, drawn the way dvc.yaml's template means it."""
    if not rows:
        ax.text(0.5, 0.5, "absent", ha="center", va="center", transform=ax.transAxes)
        return
    if "dvc_inferred_y_value" in rows[0]:     # several y columns: DVC melts them into `field`
        y = "dvc_inferred_y_value"
    if template == "confusion":
        labels = sorted({r[x] for r in rows} | {r[y] for r in rows})
        idx = {c: i for i, c in enumerate(labels)}
        grid = [[0] * len(labels) for _ in labels]
        for r in rows:
            grid[idx[r[y]]][idx[r[x]]] += 1
        ax.imshow(grid, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        return
    if _num(rows[0].get(y)) is None:           # a nominal y (bar_horizontal): total x per category
        totals: dict[str, float] = {}
        for r in rows:
            totals[r[y]] = totals.get(r[y], 0.0) + (_num(r.get(x)) or 0.0)
        ax.barh(list(totals), list(totals.values()))
        return
    series_key = next((k for k in ("field", "target", "model", "kind") if k in rows[0]), None)
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        xv, yv = _num(r.get(x)), _num(r.get(y))
        if xv is not None and yv is not None:
            series.setdefault(str(r.get(series_key, "")), []).append((xv, yv))
    for name, pts in series.items():
        pts.sort()
        style = "o" if template == "scatter" else "-"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=name or None, markersize=3)
    if series_key:
        ax.legend(fontsize=6)


def _template(item: dict) -> str:
    content = json.dumps(item.get("content", {}))
    if '"rect"' in content and "actual" in content or "confusion" in content:
        return "confusion"
    return "scatter" if '"point"' in content and '"line"' not in content else "linear"


def render_plot(plot_id: str, items: list[dict], a: Side, b: Side, a_key: str, b_key: str,
                out: Path) -> None:
    """Old on the left, new on the right, one PNG."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=items[0]["type"] == "vega")
    for ax, side, key in ((axes[0], a, a_key), (axes[1], b, b_key)):
        ax.set_title(side.label, fontsize=9)
        if items[0]["type"] == "image":
            img = next((i for i in items if key in i["revisions"]), None)
            if img:
                ax.imshow(plt.imread(img["url"]))
            ax.axis("off")
            continue
        item = items[0]
        anchors = item.get("anchor_definitions", {})
        x, y = anchors.get("<DVC_METRIC_X_LABEL>", "x"), anchors.get("<DVC_METRIC_Y_LABEL>", "y")
        _draw(ax, _rows_by_rev(item).get(key, []), x, y, _template(item))
        ax.set_xlabel(x, fontsize=8)
    fig.suptitle(plot_id, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def _changed(items: list[dict], a_key: str, b_key: str) -> bool:
    if items[0]["type"] == "image":
        by_rev = {r: Path(i["url"]).read_bytes() for i in items for r in i["revisions"]}
        return by_rev.get(a_key) != by_rev.get(b_key)
    rows = _rows_by_rev(items[0])
    return rows.get(a_key) != rows.get(b_key)


def plots_section(root: Path, a: Side, b: Side, out_dir: Path, rel_to: Path) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        shown = dvc_json(root, "plots", "diff", *_revs(a, b), "--split", "-o", tmp)
        a_key, b_key = a.rev, b.rev or WORKSPACE
        changed = sorted(pid for pid, items in shown.get("data", {}).items() if items and _changed(items, a_key, b_key))
        lines = ["## Plots", ""]
        if not changed:
            return lines + [f"No plot changed ({len(shown.get('data', {}))} compared).", ""]
        lines += [f"{len(changed)} of {len(shown['data'])} plots changed: old on the left, new on the right.", ""]
        for pid in changed:
            png = out_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", pid) + ".png")
            render_plot(pid, shown["data"][pid], a, b, a_key, b_key, png)
            lines += [f"### {pid}", "", f"![{pid}]({png.relative_to(rel_to).as_posix()})", ""]
    return lines


def reproduce(root: Path, side: Side) -> str:
    params = read_at(root, side, "params.yaml")
    scale = "?"
    if params:
        import yaml
        scale = (yaml.safe_load(params) or {}).get("scale_info", {}).get("name", "?")
    if side.kind == "workspace":
        return f"`dvc repro` on this workspace's params.yaml (scale {scale})"
    if side.kind == "experiment":
        return f"`dvc exp apply {side.name} && dvc pull && dvc repro` (scale {scale})"
    return f"`git checkout {side.rev[:12]} && dvc pull && dvc repro` (scale {scale})"


def compare(root: Path, old: str, new: str, out: Path) -> str:
    a, b = resolve(root, old), resolve(root, new)
    if a.rev is None:
        raise CompareError(f"the old side must be a commit or an experiment, not {WORKSPACE!r}")
    same = a.rev == b.rev
    lines = [f"# {a.label} → {b.label}", "",
             f"Old: {reproduce(root, a)}.  ", f"New: {reproduce(root, b)}.", ""]
    if same:
        return "\n".join(lines + ["Nothing changed: both sides are the same commit.", ""])
    pdiff = dvc_json(root, "params", "diff", *_revs(a, b))
    mdiff = dvc_json(root, "metrics", "diff", *_revs(a, b), "--all")
    lines += params_section(pdiff) + metrics_section(mdiff)
    lines += goals_section(_goals_at(root, a), _goals_at(root, b), a, b)
    lines += verdict_section(verdicts(_json_at(root, a, "reports/robustness.json")),
                             verdicts(_json_at(root, b, "reports/robustness.json")), a, b)
    lines += plots_section(root, a, b, out.parent / (out.stem + "_plots"), out.parent)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", nargs="?", default="main", help="commit, branch or experiment (default: main)")
    ap.add_argument("new", nargs="?", default=WORKSPACE, help=f"the same, or {WORKSPACE!r} (default)")
    ap.add_argument("-o", "--out", type=Path, default=Path("reports/compare.md"))
    ap.add_argument("--repo", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    try:
        text = compare(args.repo.resolve(), args.old, args.new, args.out.resolve())
    except CompareError as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    save_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
