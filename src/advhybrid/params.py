"""Read one section of params.yaml, with an error that names the missing key.

Stages read only their own section, so a change elsewhere in params.yaml never
invalidates them in DVC's eyes, and a typo fails at start-up, not an hour in.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml


class ParamsError(KeyError, ValueError):
    """The one error for bad params: a missing key (a KeyError) or a bad value (a ValueError),
    so callers catching either still catch it; the message names the file and dotted key."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


class Section(dict):
    """A params section whose missing keys raise ParamsError naming file and dotted key."""

    def __init__(self, data: dict, name: str, source: str):
        super().__init__(data)
        self.name, self.source = name, source

    def __getitem__(self, key: str) -> Any:
        if key not in self:
            raise ParamsError(
                f"{self.source}: missing key '{self.name}.{key}' "
                f"(section '{self.name}' has: {', '.join(sorted(self)) or 'nothing'})"
            )
        value = dict.__getitem__(self, key)
        if isinstance(value, dict) and not isinstance(value, Section):
            return Section(value, f"{self.name}.{key}", self.source)
        return value

    def typed(self, key: str, kind: type | tuple[type, ...]) -> Any:
        """Value of `key`, checked against `kind` (ints are accepted where floats are)."""
        value = self[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ParamsError(
                f"{self.source}: '{self.name}.{key}' must be {names}, got {value!r}"
            )
        return value

    def names(self, key: str) -> list[str]:
        """`key` as a non-empty list of distinct names (model or target names)."""
        value = self[key]
        if (not isinstance(value, list) or not value or not all(isinstance(n, str) for n in value)
                or len(set(value)) != len(value)):
            raise ParamsError(f"{self.source}: '{self.name}.{key}' must be a non-empty list of distinct "
                              f"names, got {value!r}")
        return value

    def per_model(self, key: str, model: str, kind: type | tuple[type, ...]) -> Any:
        """`key` as one value for every model, or as a {model: value} mapping naming `model`."""
        value = self[key]
        if isinstance(value, dict):
            return value.typed(model, kind)
        return self.typed(key, kind)


def load_section(name: str, path: str | os.PathLike = "params.yaml") -> Section:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no params file (compose it with `dvc exp run -S scale=...`)")
    with open(path) as f:
        try:
            doc = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ParamsError(f"{path}: not valid YAML ({e})") from e
    if name not in doc or not isinstance(doc[name], dict):
        raise ParamsError(f"{path}: missing section '{name}' (found: {', '.join(sorted(doc))})")
    return Section(doc[name], name, str(path))


# help texts of the path options most stages share
RECORD = "output: the stage's record (JSON)"
RESUME = "resume state, not a DVC output (DVC would delete it; a rerun after a crash must find it)"


def stage_parser(doc: str | None, device: bool = False, raw_doc: bool = False,
                 paths: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """A stage script's command line: `--params` (the params.yaml DVC composed), `--device` for
    the stages that can be pointed at one accelerator, and `paths`, the stage's inputs and
    outputs ({name: help}), each a required option (`k_hist` is `--k-hist PATH`): dvc.yaml's
    command names every one, so no script writes a path of its own."""
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter if raw_doc else argparse.HelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="the params file (default: %(default)s)")
    if device:
        ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: $ADVHYBRID_DEVICE, else the best there is)")
    for name, text in (paths or {}).items():
        ap.add_argument("--" + name.replace("_", "-"), required=True, type=Path, metavar="PATH", help=text)
    return ap
