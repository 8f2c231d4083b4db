"""The README's claims hold: every make target, stage, params key, file and link it names exists,
its run times are docs/results.md's, and its headline table is the committed run's."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import headline  # noqa: E402

README = REPO / "README.md"
RESULTS = REPO / "docs" / "results.md"


def code_lines(md: str) -> list[str]:
    """Each command line of the markdown's fenced code blocks, comments removed."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", md, re.S)
    return [ln.split("#", 1)[0].strip() for b in blocks for ln in b.splitlines() if ln.split("#", 1)[0].strip()]


def make_targets(makefile: str) -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", makefile, re.M))


def has_key(params: dict, dotted: str) -> bool:
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def table(md: str, first_header: str) -> dict[str, list[str]]:
    """A markdown table's rows by first cell, found by its first header cell."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_header} |"))
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def run_times(md: str) -> dict[str, str]:
    """scale -> run time, from a table whose first header is 'scale' and has a 'run time' column."""
    lines = md.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith("| scale |") and "run time" in ln:
            col = [c.strip() for c in ln.strip("|").split("|")].index(
                next(c.strip() for c in ln.strip("|").split("|") if "run time" in c))
            return {k: v[col - 1] for k, v in table("\n".join(lines[i:]), "scale").items()}
    raise AssertionError("no '| scale | ... run time ...' table")


def readme_problems(readme: str, makefile: str, dvc_yaml: dict, params: dict, root: Path = REPO) -> list[str]:
    problems = []
    stages = set(dvc_yaml["stages"])
    for line in code_lines(readme):
        words = line.split()
        if words[0] == "make" and len(words) > 1 and words[1] not in make_targets(makefile):
            problems.append(f"`{line}`: no make target {words[1]!r}")
        for key in re.findall(r"-S\s+'?([\w.]+)=", line):
            if key != "scale" and not has_key(params, key):
                problems.append(f"`{line}`: no params key {key!r}")
        for stage in re.findall(r"dvc (?:repro|exp run)[^&]*?\s([a-z_]+(?:@\w+)?)\s*$", line):
            if stage.split("@")[0] not in stages:
                problems.append(f"`{line}`: no stage {stage!r}")
    for name in table(readme, "stage"):
        for stage in (s.strip() for s in name.replace("&lt;model&gt;", "").replace("&lt;n&gt;", "").split(",")):
            if stage.rstrip("@") not in stages:
                problems.append(f"stage table: no stage {stage!r} in dvc.yaml")
    for target, anchor in re.findall(r"\]\(((?!https?:)[^)#\s]+)(?:#([^)\s]+))?\)", readme):
        path = root / target
        if not path.exists():
            problems.append(f"link to {target}: no such file")
        elif anchor and anchor not in {slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}:
            problems.append(f"link to {target}#{anchor}: no such heading")
    for path in re.findall(r"`((?:src|docs|tools|conf|reports|metrics|bench|tests)/[\w./-]+|[\w-]+\.(?:lock|cff|yaml))`",
                           readme):
        if "<" not in path and not (root / path).exists():
            problems.append(f"`{path}`: no such file")
    return problems


def load(root: Path = REPO) -> tuple[str, str, dict, dict]:
    return (README.read_text(), (root / "Makefile").read_text(), yaml.safe_load((root / "dvc.yaml").read_text()),
            yaml.safe_load((root / "params.yaml").read_text()))


def test_every_target_stage_key_file_and_link_the_readme_names_exists():
    assert readme_problems(*load()) == []


@pytest.mark.parametrize("old, new", [("make smoke", "make smoek"), ("train.lr=0.002", "train.lrate=0.002"),
                                      ("| eval_mixed |", "| eval_mix |"), ("(docs/design.md)", "(docs/designs.md)")])
def test_a_renamed_target_key_stage_or_file_is_caught(old, new):
    readme, *rest = load()
    assert old in readme, f"the README no longer says {old!r}: pick another example"
    assert readme_problems(readme.replace(old, new), *rest), f"renaming {old!r} to {new!r} went unnoticed"


def test_a_target_renamed_in_the_makefile_is_caught():
    readme, makefile, *rest = load()
    assert readme_problems(readme, makefile.replace("\nsmoke:", "\nsmoke-run:"), *rest)


def test_the_readme_run_times_are_the_ones_docs_results_measured():
    ours, measured = run_times(README.read_text()), run_times(RESULTS.read_text())
    assert set(ours) == {"smoke", "reference", "paper"}
    assert ours == {k: measured[k] for k in ours}, f"README {ours} against docs/results.md {measured}"


def test_the_readme_headline_is_the_committed_robustness_record():
    details = json.loads((REPO / "reports" / "robustness.json").read_text())
    expected = "\n".join(headline.block(details))
    assert expected in README.read_text(), ("README's headline block differs from the committed run; "
                                            "regenerate it with `python tools/headline.py --write README.md`")


def test_the_first_screen_has_the_citation_the_headline_and_the_caveat():
    text = README.read_text()
    first = "\n".join(text.splitlines()[:40])
    assert "https://doi.org/10.54654/isj.v2i22.1036" in first
    assert "| model (accuracy, %) |" in first and "**Verdict**" in first
    assert "Caveat" in first and "paper scale has not been run on a GPU" in first
    assert len(text.splitlines()) < 150


# How the repository was made belongs in commit messages, not in what its users read.
WORKPLACE = re.compile(r"\bissues? #?\d+|\bsessions?\b|\bborrowed\b|\blent\b|\blending\b|\bsandbox\b|/work/|"
                       r"\bdevice tool\b|\bagents?\b|\bsubagents?\b", re.I)


def test_the_product_never_mentions_how_it_was_made():
    files = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "conf").rglob("*.yaml"),
             *(p for p in (REPO / "tools").iterdir() if p.suffix in (".py", ".sh")),
             *(REPO / "bench").glob("*.py"), *(REPO / "src").rglob("*.py")]
    found = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in files
             for i, line in enumerate(p.read_text().splitlines(), 1) if WORKPLACE.search(line)]
    assert not found, "\n".join(found)
