"""dvc.yaml is the whole contract of each stage: what it imports, reads and writes.

Every module a stage imports is one of its DVC deps, so editing it makes the stage stale. The
imports are read from the code (AST, followed transitively through the advhybrid package), not
from a list kept by hand, so a new import without a new dep fails here. Every file a stage reads
or writes is an argument of its command, so dvc.yaml is the one place a path is written.
"""
from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

from conftest import REPO, script_args

SRC = REPO / "src"


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "advhybrid":
        return None
    base = SRC.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def imported_files(path: Path, seen: set[Path] | None = None) -> set[Path]:
    """advhybrid source files `path` imports, directly or through other advhybrid modules."""
    seen = set() if seen is None else seen
    tree = ast.parse(path.read_text())
    pkg = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1]) if path.is_relative_to(SRC / "advhybrid") else ""
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            # a package import runs its __init__ and, for "from pkg import mod", the module too
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                f = module_file(".".join(parts[:i]))
                if f is not None and f not in seen:
                    seen.add(f)
                    imported_files(f, seen)
    return seen


def docstring_only(f: Path) -> bool:
    """A module of nothing but its docstring and constants (`__version__`) carries no behaviour."""
    body = ast.parse(f.read_text()).body
    return all(isinstance(n, (ast.Expr, ast.Assign)) and isinstance(n.value, ast.Constant) for n in body)


def stages() -> dict[str, dict]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, st in spec.items():
        if "foreach" in st:
            out[name] = st["do"]
        else:
            out[name] = st
    return out


def covered(f: Path, deps: list[str]) -> bool:
    rel = f.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(stages()))
def test_stage_deps_cover_every_module_the_stage_imports(stage):
    st = stages()[stage]
    deps = [d for d in st.get("deps", []) if isinstance(d, str)]
    script = next((REPO / w for w in st["cmd"].split() if w.startswith("src/") and w.endswith(".py")), None)
    assert script is not None and script.is_file(), f"{stage}: no src/*.py script in {st['cmd']!r}"
    assert covered(script, deps), f"{stage}: its script {script.relative_to(REPO)} is not a dep"
    missing = sorted(f.relative_to(REPO).as_posix() for f in imported_files(script) if not covered(f, deps))
    missing = [m for m in missing if not docstring_only(REPO / m)]
    assert not missing, f"dvc.yaml stage {stage!r} imports code it does not list in deps: {missing}"


# --- paths: the command names every declared file, and the code names none -----------------------

MARKER = "checks/params.json"   # every stage's dep, for the order alone (check_params runs first)
RESUME = "checkpoints/"          # resume state: named in the command, never an output DVC would delete
TOP = ("data/", "models/", "metrics/", "plots/", "reports/", "checks/", "checkpoints/")
ALLOWED = {  # literal repository paths in src/ that are not a stage's inputs or outputs
    ("src/advhybrid/evaluation/summary.py", "models/"): "a row's name inside the summary folder",
}


def declared(st: dict) -> set[str]:
    """A stage's non-code deps (less the order marker) and its outs, metrics and plots."""
    deps = {d for d in st.get("deps", []) if isinstance(d, str) and not d.startswith("src/")} - {MARKER}
    return deps | {next(iter(o)) if isinstance(o, dict) else o
                   for key in ("outs", "metrics", "plots") for o in st.get(key, [])}


def path_arguments(cmd: str) -> set[str]:
    return {w for w in script_args(cmd) if not w.startswith("-") and "/" in w}


@pytest.mark.parametrize("stage", sorted(stages()))
def test_every_file_a_stage_reads_or_writes_is_an_argument_of_its_command(stage):
    st = stages()[stage]
    given, paths = path_arguments(st["cmd"]), declared(st)
    assert paths - given == set(), f"{stage}: declared in dvc.yaml but not passed to the script: {sorted(paths - given)}"
    undeclared = {p for p in given - paths if not p.startswith(RESUME)}
    assert not undeclared, f"{stage}: the command names paths dvc.yaml does not declare: {sorted(undeclared)}"


def _docstrings(tree: ast.AST) -> set[int]:
    return {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def test_no_stage_script_or_library_module_writes_a_pipeline_path():
    scripts = {REPO / w for st in stages().values() for w in shlex.split(st["cmd"]) if w.endswith(".py")}
    found = []
    for f in sorted(scripts | set((SRC / "advhybrid").rglob("*.py"))):
        tree = ast.parse(f.read_text())
        docs = _docstrings(tree)
        rel = f.relative_to(REPO).as_posix()
        found += [f"{rel}:{n.lineno}: {n.value!r}" for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
                  and n.value.startswith(TOP) and (rel, n.value) not in ALLOWED]
    assert not found, "paths belong in dvc.yaml's commands, not in the code:\n" + "\n".join(found)


def options(cmd: str) -> dict[str, str]:
    """A command's `--option value` pairs (a foreach stage's `${item}` comes first, alone)."""
    words = script_args(cmd)
    return {w: words[i + 1] for i, w in enumerate(words) if w.startswith("--")}


def test_the_record_folders_report_and_summarize_read_hold_the_files_their_stages_write():
    """records.py names the files inside a record folder (`<model>.json`, `s<seed>.json`): each
    must be what the foreach stage writing it gets from dvc.yaml, `${item}` for the name."""
    from advhybrid.evaluation.records import FOLDERS

    writer = {"train": "train", "control": "control", "seeds": "seed"}
    for reader in ("report", "summarize"):
        given = options(stages()[reader]["cmd"])
        for record, files in FOLDERS.items():
            expected = f"{given['--' + record]}/" + files.replace("<model>", "${item}").replace("<seed>", "${item}")
            written = options(stages()[writer[record]]["cmd"])["--metrics"]
            assert written == expected, f"{reader} reads {expected}, {writer[record]}@ writes {written}"


@pytest.mark.parametrize("stage", sorted(stages()))
def test_a_stage_script_run_without_its_paths_names_every_missing_option(stage, capsys):
    """No default path to fall back on: a script called without dvc.yaml's arguments stops at
    once and lists what it needs."""
    import importlib.util

    script = next(REPO / w for w in shlex.split(stages()[stage]["cmd"]) if w.endswith(".py"))
    spec = importlib.util.spec_from_file_location(f"stage_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--params", "params.yaml"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "the following arguments are required:" in message
    missing = [opt for opt in options(stages()[stage]["cmd"]) if opt not in message]
    assert not missing, f"{script.name} did not name {missing}:\n{message}"
