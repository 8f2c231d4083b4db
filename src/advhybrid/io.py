"""Atomic writes, npz contracts between stages, checksums.

Every stage writes through these helpers so that a crash or a bad input never leaves a
half-written output behind: data goes to a temporary file beside the target and is renamed
into place only once it is complete.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np


class ContractError(ValueError):
    """A stage input does not have the shape, keys or dtypes the contract promises."""


NUM_CLASSES = 10  # CIFAR-10: every array of labels that crosses a stage boundary holds 0..9


TMP_DIR = ".advhybrid-tmp"  # at the working directory: the repository root, where DVC runs stages


def _temp_dir(path: Path) -> Path:
    """Where the temporary copy of `path` is written. Not `path`'s own folder: that may be a
    declared output (models/targets), and a kill would leave a stray file inside it. Every stage
    runs at the repository root, so <root>/.advhybrid-tmp is inside no output; it is only used
    when it shares `path`'s file system (the rename must stay atomic)."""
    cwd = Path.cwd()
    if not path.resolve().is_relative_to(cwd.resolve()):
        return path.parent
    tmp = cwd / TMP_DIR
    tmp.mkdir(exist_ok=True)
    return tmp if os.stat(tmp).st_dev == os.stat(path.parent).st_dev else path.parent


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path (see _temp_dir); rename it onto `path` on success.

    The temporary file lives on the same file system so the final rename is atomic on POSIX.
    On any exception the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):  # another write may remove the shared folder between mkdir and mkstemp
        tmp_dir = _temp_dir(path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=tmp_dir)
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files; outputs should get the usual umask-derived mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        if tmp_dir.name == TMP_DIR:
            with contextlib.suppress(OSError):  # still in use by another write, or gone already
                tmp_dir.rmdir()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces `path` whole.

    The old folder is renamed away first and deleted after the swap, so at every moment
    `path` is either the complete old tree or the complete new one. On error the temporary
    folder is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result is an ordinary shared folder
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write arrays to `path` atomically (uncompressed: uint8 images barely compress)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_npz(path: str | os.PathLike, required: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Load every array of an npz file, failing clearly when it or a key is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected an .npz written by an earlier stage)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError...
        raise ContractError(f"{path}: cannot be read as .npz ({e})") from e
    missing = [k for k in required if k not in data]
    if missing:
        raise ContractError(f"{path}: missing array(s) {missing}; found {sorted(data)}")
    if "labels" in data:  # checked on every load: a subset of bad labels would pass unnoticed
        check_labels(path, data["labels"], len(data["images"]) if "images" in data else None)
    return data


def check_labels(path: str | os.PathLike, labels: np.ndarray, n_images: int | None = None) -> None:
    """Labels cross stage boundaries as one integer class index (0..9) per image."""
    expected = f"one integer class index in 0..{NUM_CLASSES - 1} per image"
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ContractError(f"{path}: 'labels' must be {expected}, got a {labels.dtype} array of shape {labels.shape}")
    if n_images is not None and len(labels) != n_images:
        raise ContractError(f"{path}: 'labels' must be {expected}: {len(labels)} labels for {n_images} images")
    bad = (labels < 0) | (labels >= NUM_CLASSES)
    if bad.any():
        raise ContractError(f"{path}: 'labels' must be {expected}; {int(bad.sum())} are not, e.g. "
                            f"{np.unique(labels[bad])[:5].tolist()}")


def check_images(path: str | os.PathLike, images: np.ndarray) -> None:
    """Images cross stage boundaries as N x 32 x 32 x 3 uint8; anything else is a bug upstream."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ContractError(
            f"{path}: 'images' must be N x 32 x 32 x 3 uint8, got {images.shape} {images.dtype}"
        )


def json_text(obj: Any) -> str:
    """The one JSON layout of every metrics file (`dvc metrics diff` reads it; people too)."""
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def load_json(path: str | os.PathLike, what: str = "a JSON file written by an earlier stage") -> Any:
    """A metrics or report JSON file; missing, truncated or not JSON, the error names it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected {what})")
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        state = "empty" if not text.strip() else f"not valid JSON at line {e.lineno} column {e.colno} ({e.msg})"
        raise ContractError(f"{path}: {state}; expected {what} (rerun the stage that writes it)") from None


def save_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json_text(obj))


def save_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def csv_text(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike = "CSV") -> str:
    """A list of flat dicts as CSV (the format `dvc plots` reads best)."""
    if not rows:
        raise ValueError(f"{path}: refusing to write an empty CSV")
    cols = list(rows[0])
    lines = [",".join(cols)]
    lines += [",".join(_fmt(r[c]) for c in cols) for r in rows]
    return "\n".join(lines) + "\n"


def save_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    save_text(path, csv_text(rows, path))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    import torch

    # Through a file object, not the temporary path: torch.save names the zip's inner folder
    # after the file it is given, so a random temporary name would give identical weights a
    # new md5 every time, and DVC would rerun every stage downstream.
    with atomic_path(path, suffix=".pt") as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint (ours: tensors, numbers, lists, dicts), always loaded to the CPU.

    CPU first, then `load_state_dict` moves each tensor where its module or optimizer lives:
    loading straight onto CUDA would leave Adam's `step` counters on the GPU, and every resumed
    step would then synchronise on them. A corrupt file names itself.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ContractError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e}); delete it to start "
                            "that run afresh") from e
    if not isinstance(state, dict):
        raise ContractError(f"{path}: a checkpoint must hold a dict, found {type(state).__name__}")
    return state


def check_entries(state: Mapping[str, Any], path: str | os.PathLike, required: Sequence[str]) -> None:
    """A checkpoint of this run (its key matched) that lacks what a resume reads, for example one
    edited by hand or cut down by an older version, names itself and the missing entries rather
    than failing halfway through a resume with a bare KeyError."""
    missing = [k for k in required if k not in state]
    if missing:
        raise ContractError(f"{path}: checkpoint lacks {', '.join(missing)} (it has {', '.join(map(str, state))});"
                            " delete it to start that run afresh")


def data_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """Identifies a training set by content, so a checkpoint resumes only on the data it saw."""
    h = hashlib.sha256(np.ascontiguousarray(images).data)
    h.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    return h.hexdigest()[:16]


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks (checkpoints and archives are hundreds of MB)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")
