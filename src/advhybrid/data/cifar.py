"""Import CIFAR-10 into uint8 arrays from the official archive or an image-folder tree.

Sources:
- ``"official"``: ``cifar-10-python.tar.gz`` downloaded by torchvision into ``download_dir``
  and md5-checked, or a path to that file.
- a directory or ``.tar``/``.tar.gz``/``.tgz`` archive laid out ``{train,test}/<class>/<image>``,
  optionally under one top-level folder. Archives are streamed once and decoded from memory,
  never extracted.

Every bad input raises ``CifarSourceError`` naming the offending path; nothing is returned
until both splits are complete, so a caller that writes afterwards never writes half a dataset.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from advhybrid.io import file_digest

CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
SPLITS: tuple[str, ...] = ("train", "test")
OFFICIAL_FILENAME = "cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
SOURCE_ENV = "ADVHYBRID_CIFAR_SOURCE"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_OFFICIAL_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


class CifarSourceError(ValueError):
    """The CIFAR-10 source is missing, corrupt or not laid out as expected."""


# Where DVC runs a queued or temporary experiment: a copy of the repository inside the one the
# experiment was queued from (<repo>/.dvc/tmp/exps/<tmp>/). A relative source such as
# ../shared/data/x.tar.gz means "beside the repository", so it is read against that repository.
_EXPERIMENT_COPY = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep


def source_path(source: str, cwd: str | os.PathLike | None = None) -> Path:
    """A local source's path, relative ones taken from the repository the run belongs to.

    In the repository itself that is the working directory (DVC runs every stage at its root);
    in a queued experiment's temporary copy it is the repository the experiment was queued from,
    so params.yaml can name a path beside the clone without naming the machine.
    """
    path = Path(source)
    if path.is_absolute():
        return path
    here = str(Path(cwd) if cwd is not None else Path.cwd())
    if _EXPERIMENT_COPY in here + os.sep:
        origin = Path((here + os.sep).split(_EXPERIMENT_COPY)[0])
        return origin / path
    return path


def resolve_source(configured: str) -> str:
    """The source to use: $ADVHYBRID_CIFAR_SOURCE when set (offline machines), else `configured`;
    a local path comes back resolved by `source_path`."""
    source = os.environ.get(SOURCE_ENV) or configured
    return source if source == "official" else str(source_path(source))


def import_cifar(source: str, download_dir: str | os.PathLike) -> Splits:
    """Both splits of CIFAR-10 as ``{"train": (images, labels), "test": (images, labels)}``.

    images: N x 32 x 32 x 3 uint8; labels: N int64 indices into ``CLASSES``.
    """
    if source == "official":
        return read_official_archive(download_official(download_dir), OFFICIAL_MD5)
    path = Path(source)
    if not path.exists():
        raise CifarSourceError(
            f"{path}: CIFAR-10 source does not exist (expected 'official', {OFFICIAL_FILENAME}, "
            f"or an image-folder directory/{'/'.join(ARCHIVE_SUFFIXES)} archive)"
        )
    if path.is_dir():
        return read_image_folder(path)
    if path.name == OFFICIAL_FILENAME:
        return read_official_archive(path, OFFICIAL_MD5)
    if path.name.endswith(ARCHIVE_SUFFIXES):
        return read_image_folder(path)
    raise CifarSourceError(
        f"{path}: unsupported CIFAR-10 source; expected {OFFICIAL_FILENAME}, a directory, "
        f"or an archive ending in {', '.join(ARCHIVE_SUFFIXES)}"
    )


# --- official python archive -------------------------------------------------------------


def md5_file(path: str | os.PathLike) -> str:
    return file_digest(path, "md5")  # the checksum torchvision publishes for the archive


def check_md5(path: Path, expected: str) -> None:
    actual = md5_file(path)
    if actual != expected:
        raise CifarSourceError(
            f"{path}: checksum mismatch (expected md5 {expected}, got {actual}); "
            "the file is corrupt or not the official archive; delete it to download it again"
        )


def download_official(download_dir: str | os.PathLike) -> Path:
    """Path of the md5-checked official archive in `download_dir`, downloading it if absent."""
    path = Path(download_dir) / OFFICIAL_FILENAME
    if path.exists():
        # Checked here because torchvision would silently download over a corrupt file.
        check_md5(path, OFFICIAL_MD5)
        return path
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_url

    try:
        download_url(CIFAR10.url, str(path.parent), OFFICIAL_FILENAME, OFFICIAL_MD5)
    except Exception as e:  # URLError, HTTPError, RuntimeError("corrupted"), OSError...
        raise CifarSourceError(
            f"{path}: could not download {CIFAR10.url} ({e}); on an offline machine set "
            f"{SOURCE_ENV} to a local CIFAR-10 archive"
        ) from e
    check_md5(path, OFFICIAL_MD5)
    return path


def read_official_archive(path: str | os.PathLike, expected_md5: str = OFFICIAL_MD5) -> Splits:
    """Read the pickled batches of ``cifar-10-python.tar.gz`` straight from the tar stream."""
    path = Path(path)
    if not path.is_file():
        raise CifarSourceError(f"{path}: official CIFAR-10 archive does not exist")
    # The md5 check comes first: it is what makes unpickling this file safe.
    check_md5(path, expected_md5)
    batches: dict[str, dict] = {}
    wanted = {*_OFFICIAL_BATCHES["train"], *_OFFICIAL_BATCHES["test"], "batches.meta"}
    for name, data in _tar_files(path):
        base = name.rsplit("/", 1)[-1]
        if base in wanted:
            batches[base] = pickle.loads(data, encoding="bytes")
    missing = sorted(wanted - set(batches))
    if missing:
        raise CifarSourceError(f"{path}: official archive lacks batch file(s) {missing}")
    names = [n.decode() for n in batches["batches.meta"][b"label_names"]]
    if tuple(names) != CLASSES:
        raise CifarSourceError(f"{path}: batches.meta label_names {names} != {list(CLASSES)}")
    out: Splits = {}
    for split, files in _OFFICIAL_BATCHES.items():
        data = np.concatenate([np.asarray(batches[f][b"data"], dtype=np.uint8) for f in files])
        labels = np.concatenate([np.asarray(batches[f][b"labels"], dtype=np.int64) for f in files])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise CifarSourceError(
                f"{path}: {split} batches have data {data.shape} and {len(labels)} labels; "
                "expected N x 3072 and N labels"
            )
        # Rows are channel-planar (1024 R, 1024 G, 1024 B); the contract is NHWC.
        images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        out[split] = (images, labels)
    return out


# --- image-folder tree or archive -----------------------------------------------------------


def read_image_folder(path: str | os.PathLike) -> Splits:
    """Read ``{train,test}/<class>/<image>`` (optionally under one top-level folder).

    Within a class, images are taken in file-name order so the result is deterministic.
    """
    path = Path(path)
    if path.is_dir():
        entries: Iterable[tuple[str, bytes]] = _dir_files(path)
        label = lambda rel: str(path / rel)  # noqa: E731
    else:
        entries = _tar_files(path)
        label = lambda rel: f"{path}:{rel}" if rel else str(path)  # noqa: E731
    files = {name: data for name, data in entries if not _hidden(name)}
    tree = _group(files, label)
    out: Splits = {}
    for split, classes in tree.items():
        keys = [(c, name) for c in range(len(CLASSES)) for name in sorted(classes[c])]
        images = np.empty((len(keys), 32, 32, 3), np.uint8)
        for i, (c, name) in enumerate(tqdm(keys, desc=f"decode {split}", unit="img", mininterval=1)):
            images[i] = _decode(files[classes[c][name]], label(classes[c][name]))
        labels = np.array([c for c, _ in keys], dtype=np.int64)
        out[split] = (images, labels)
    return out


def _group(files: dict[str, bytes], label) -> dict[str, dict[int, dict[str, str]]]:
    """Map split -> class index -> file name -> member path, validating the layout."""
    parts = {name: tuple(name.split("/")) for name in files}
    tops = {p[0] for p in parts.values()}
    prefix = 0 if not tops or tops & set(SPLITS) else 1
    if prefix == 1 and len(tops) > 1:
        raise CifarSourceError(
            f"{label('')}: expected {{train,test}}/<class>/<image>, optionally under one "
            f"top-level folder; found top-level entries {sorted(tops)}"
        )
    root = next(iter(tops)) + "/" if prefix else ""
    tree: dict[str, dict[int, dict[str, str]]] = {s: {} for s in SPLITS}
    for name, p in parts.items():
        rel = p[prefix:]
        if len(rel) != 3 or rel[0] not in SPLITS:
            raise CifarSourceError(
                f"{label(name)}: unexpected file; expected {root}{{train,test}}/<class>/<image>"
            )
        split, cls, fname = rel
        if cls not in CLASSES:
            raise CifarSourceError(
                f"{label(root + split + '/' + cls)}: unknown class folder '{cls}'; "
                f"expected one of {list(CLASSES)}"
            )
        tree[split].setdefault(CLASSES.index(cls), {})[fname] = name
    for split, classes in tree.items():
        where = label(root + split)
        if not classes:
            raise CifarSourceError(f"{where}: split has no images")
        missing = [CLASSES[c] for c in range(len(CLASSES)) if c not in classes]
        if missing:
            raise CifarSourceError(f"{where}: missing class folder(s) (or no images in) {missing}")
    return tree


def _decode(data: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            # CIFAR is RGB; grayscale, palette or RGBA files are converted (alpha is dropped).
            rgb = im if im.mode == "RGB" else im.convert("RGB")
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, ValueError, SyntaxError...
        raise CifarSourceError(f"{where}: cannot decode image ({type(e).__name__}: {e})") from e
    if rgb.size != (32, 32):
        raise CifarSourceError(f"{where}: image is {rgb.size[0]}x{rgb.size[1]}, expected 32x32")
    return np.asarray(rgb)


def _hidden(name: str) -> bool:
    # Skip dotfiles such as macOS' ._* AppleDouble entries and .DS_Store that archivers add.
    return any(part.startswith(".") for part in name.split("/"))


def _dir_files(root: Path) -> Iterator[tuple[str, bytes]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            full = Path(dirpath) / f
            yield full.relative_to(root).as_posix(), full.read_bytes()


def _tar_files(path: Path) -> Iterator[tuple[str, bytes]]:
    """Regular files of a (possibly compressed) tar, read in one sequential pass."""
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if member.isfile():
                    f = tar.extractfile(member)
                    name = member.name
                    while name.startswith("./"):  # archives made with `tar -C dir .`
                        name = name[2:]
                    yield name, f.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise CifarSourceError(f"{path}: cannot read as a tar archive ({type(e).__name__}: {e})") from e
