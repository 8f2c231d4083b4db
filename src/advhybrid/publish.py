"""Several outputs of one stage published as a set: after any failure, the old set or the new one.

One rename is atomic; several are not. A stage that writes several outputs (build_hybrid_splits:
the three splits, two metrics files, a plot and the Data Docs) writes them all into one staging
folder beside its outputs, then writes a journal there (the commit point), then renames each into
place. Killed before the journal, the old set is untouched and the staging folder is dropped at
the next start; killed during the renames, the next start finishes them from the journal. The
staging folder is never inside a declared output, so no temporary file can be mistaken for
one (by DVC, or by the next stage), and a folder output (data/hybrid) is swapped in whole, so its
files always come from the same run.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Iterator, Sequence

JOURNAL = "journal.json"
FAULT_ENV = "ADVHYBRID_FAULT_AT"  # tests only: SIGKILL the process at a named point of publishing


class StagedOutputs:
    """Where to write the new version of each output: `staged[path]` (a folder output's staged
    folder exists already; a file output's parent does)."""

    def __init__(self, root: Path, files: Sequence[Path], dirs: Sequence[Path]):
        self.root = root
        self._map: dict[Path, Path] = {}
        for i, target in enumerate([*files, *dirs]):
            staged = root / "new" / f"{i}-{target.name}"
            self._map[Path(target)] = staged
        for d in dirs:
            self._map[Path(d)].mkdir(parents=True)
        (root / "new").mkdir(parents=True, exist_ok=True)

    def __getitem__(self, target: str | os.PathLike) -> Path:
        return self._map[Path(target)]

    def pairs(self) -> list[tuple[Path, Path]]:
        return list(self._map.items())


def staging_dir(name: str, targets: Sequence[str | os.PathLike]) -> Path:
    """The stage's staging folder: hidden, in the folder that holds all its outputs (so every
    rename stays on one file system), and never inside any of them."""
    parents = [os.path.abspath(Path(t).parent) for t in targets]
    return Path(os.path.commonpath(parents)) / f".publish-{name}"


@contextlib.contextmanager
def output_set(name: str, files: Sequence[str | os.PathLike] = (),
               dirs: Sequence[str | os.PathLike] = ()) -> Iterator[StagedOutputs]:
    """Yield the staged paths of `files` and `dirs`; publish them all when the block succeeds.

    Enter it before the work starts: it first completes (or drops) whatever a killed run of the
    same stage left behind, so the outputs are a whole set before anything reads them.
    """
    targets = [Path(t) for t in [*files, *dirs]]
    root = staging_dir(name, targets)
    recover(root)
    try:
        staged = StagedOutputs(root, [Path(f) for f in files], [Path(d) for d in dirs])
        yield staged
        _fault("before_journal")
        journal = {"pairs": [[str(src), str(dst.resolve())] for dst, src in staged.pairs()]}
        tmp = root / f".{JOURNAL}.tmp"
        tmp.write_text(json.dumps(journal))
        os.replace(tmp, root / JOURNAL)   # the commit point: from here on, the new set wins
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    recover(root)


def recover(root: Path) -> None:
    """Finish the renames a journal records (idempotent), or drop an uncommitted staging folder."""
    if not root.exists():
        return
    journal = root / JOURNAL
    if journal.is_file():
        pairs = json.loads(journal.read_text())["pairs"]
        old = root / "old"
        old.mkdir(exist_ok=True)
        for i, (src, dst) in enumerate(pairs):
            src, dst = Path(src), Path(dst)
            if not src.exists():
                continue  # moved into place before an interruption
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_dir() and not dst.is_symlink():
                os.replace(dst, old / str(i))  # rename cannot replace a non-empty folder; a file it can
            os.replace(src, dst)
            _fault("after_first_rename")
    shutil.rmtree(root)


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
