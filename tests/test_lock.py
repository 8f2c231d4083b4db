"""requirements.lock against pyproject.toml and the Makefile (no network, no install).

`make venv` installs requirements.lock and then the project with --no-deps, so a dependency that
pyproject.toml names but the lock does not pin would be missing from the venv. These tests fail
until `make lock` has been run after such a change.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
MAKEFILE = ROOT / "Makefile"

# Installed by the Makefile itself, outside the lock: the torch pins (the platform decides the
# build) and torchattacks (--no-deps, its requests~=2.25 pin conflicts with DVC's urllib3).
MAKEFILE_PINNED = {"torch", "torchvision"}
NOT_IN_LOCK = MAKEFILE_PINNED | {"torchattacks", "advhybrid", "pip", "setuptools", "wheel"}

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#@]+)$")


def canonical(name: str) -> str:
    """PEP 503: lower case, and runs of -, _ and . are one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_requirements() -> list[str]:
    """The requirement strings of the project's dependencies and its test extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"]) + list(project["optional-dependencies"]["test"])


def lock_lines() -> list[str]:
    return [
        line.strip()
        for line in LOCK.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in lock_lines():
        m = _PIN.match(line)
        assert m, f"requirements.lock: not an exact name==version pin: {line!r}"
        pins[canonical(m.group(1))] = m.group(2)
    return pins


def venv_rule() -> tuple[str, list[str]]:
    """The prerequisites and recipe lines of the Makefile's `$(BIN)/.installed` rule."""
    lines = MAKEFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("$(BIN)/.installed:"):
            recipe = []
            for body in lines[i + 1:]:
                if not body.startswith("\t"):
                    break
                recipe.append(body.strip())
            return line.split(":", 1)[1], recipe
    pytest.fail("Makefile has no `$(BIN)/.installed:` rule")


def test_lock_lines_are_unique_exact_pins():
    names = []
    for line in lock_lines():
        m = _PIN.match(line)
        assert m, f"requirements.lock: not an exact name==version pin: {line!r}"
        names.append(canonical(m.group(1)))
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"requirements.lock pins these more than once: {duplicates}"
    assert len(names) > 20, "requirements.lock looks truncated"


def test_lock_leaves_out_what_the_makefile_installs_itself():
    pins = lock_pins()
    inside = sorted(n for n in pins if n in NOT_IN_LOCK or n.startswith(("nvidia-", "cuda-")) or n == "triton")
    assert not inside, f"requirements.lock should not pin {inside} (see its header)"


def test_every_pyproject_dependency_is_pinned_in_the_lock():
    pins = lock_pins()
    missing = []
    for requirement in pyproject_requirements():
        name = canonical(_NAME.match(requirement).group(1))
        if name not in MAKEFILE_PINNED and name not in pins:
            missing.append(requirement)
    assert not missing, (
        f"pyproject.toml names {missing} but requirements.lock does not pin them: run `make lock`"
    )


def test_every_pin_satisfies_pyproject():
    packaging = pytest.importorskip("packaging.requirements")
    pins = lock_pins()
    wrong = []
    for text in pyproject_requirements():
        requirement = packaging.Requirement(text)
        name = canonical(requirement.name)
        if name in MAKEFILE_PINNED or name not in pins:
            continue  # the Makefile's pins: next test; missing ones: the test above
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": "test"}):
            continue
        if not requirement.specifier.contains(pins[name], prereleases=True):
            wrong.append(f"{name}=={pins[name]} (pyproject.toml: {text})")
    assert not wrong, f"requirements.lock pins outside pyproject.toml's ranges, run `make lock`: {wrong}"


def test_makefile_torch_pins_satisfy_pyproject():
    packaging = pytest.importorskip("packaging.requirements")
    makefile = MAKEFILE.read_text()
    for text in pyproject_requirements():
        requirement = packaging.Requirement(text)
        if canonical(requirement.name) not in MAKEFILE_PINNED:
            continue
        m = re.search(rf"(?<![\w.-]){re.escape(requirement.name)}==([^\s'\"]+)", makefile)
        assert m, f"the Makefile pins no {requirement.name}=="
        assert requirement.specifier.contains(m.group(1), prereleases=True), (
            f"Makefile's {requirement.name}=={m.group(1)} is outside pyproject.toml's {text}"
        )


def test_makefile_venv_installs_from_the_lock():
    prerequisites, recipe = venv_rule()
    assert "requirements.lock" in prerequisites.split(), "the venv stamp must be rebuilt when the lock changes"
    installs = [line for line in recipe if re.search(r"\bpip install\b", line)]
    lock_install = [i for i, line in enumerate(installs) if re.search(r"-r\s+requirements\.lock\b", line)]
    assert lock_install, "the venv rule does not `pip install -r requirements.lock`"
    project = [i for i, line in enumerate(installs) if re.search(r"-e\s+'?\.(\[|'|\s|$)", line)]
    assert project, "the venv rule does not install the project (-e .)"
    for i in project:
        assert "--no-deps" in installs[i].split(), f"the project must go in with --no-deps: {installs[i]!r}"
        assert i > lock_install[0], "the project must be installed after the lock"
