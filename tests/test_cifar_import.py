"""CIFAR-10 import: image-folder trees/archives, the official pickle archive, and the stage."""
from __future__ import annotations

import hashlib
import io
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from advhybrid.data import cifar
from advhybrid.data.cifar import CLASSES, CifarSourceError, import_cifar
from advhybrid.io import load_npz

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
import download_cifar  # noqa: E402

# Names chosen so that creation order, numeric order and file-name order all differ.
NAMES = ("b.png", "10.png", "a.png")


def _pixels(split: str, cls: int, name: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.md5(f"{split}/{cls}/{name}".encode()).digest()[:4], "little")
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def write_tree(root: Path, classes=CLASSES, splits=("train", "test"), names=NAMES) -> Path:
    """A {split}/{class}/{name}.png tree of random lossless images."""
    for split in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for name in names:
                Image.fromarray(_pixels(split, CLASSES.index(c), name)).save(d / name)
    return root


def make_tar(src: Path, out: Path, arcname: str = ".") -> Path:
    """Tar `src` under `arcname`, members in reverse name order so the reader must sort."""
    with tarfile.open(out, "w:gz" if out.name.endswith("gz") else "w") as tar:
        for f in sorted(src.rglob("*"), reverse=True):
            tar.add(f, arcname=f"{arcname}/{f.relative_to(src).as_posix()}", recursive=False)
    return out


def expected(split: str, names=NAMES) -> tuple[np.ndarray, np.ndarray]:
    keys = [(c, n) for c in range(10) for n in sorted(names)]
    return np.stack([_pixels(split, c, n) for c, n in keys]), np.array([c for c, _ in keys])


def run_stage(tmp_path: Path, monkeypatch, source: str | Path, params_source: str = "official"):
    """Run the stage in-process with $ADVHYBRID_CIFAR_SOURCE=source; return its out dir."""
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: {params_source}\n  download_dir: {tmp_path / 'dl'}\n")
    out = tmp_path / "out"
    monkeypatch.setenv("ADVHYBRID_CIFAR_SOURCE", str(source))
    download_cifar.main(["--params", str(params), "--out", str(out)])
    return out


def written(out: Path) -> list[Path]:
    return sorted(out.rglob("*")) if out.exists() else []


# --- image folders --------------------------------------------------------------------------


def test_archive_under_top_folder_imports_in_file_name_order(tmp_path):
    tree = write_tree(tmp_path / "tree")
    archive = make_tar(tree, tmp_path / "imgs.tar.gz", arcname="cifar10-png")
    splits = import_cifar(str(archive), str(tmp_path / "dl"))
    assert list(splits) == ["train", "test"]
    for split, (images, labels) in splits.items():
        want_x, want_y = expected(split)
        assert images.dtype == np.uint8 and images.shape == (30, 32, 32, 3)
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(labels, want_y)
        np.testing.assert_array_equal(images, want_x)


def test_directory_and_plain_tar_give_identical_arrays(tmp_path):
    tree = write_tree(tmp_path / "tree")
    from_dir = import_cifar(str(tree), str(tmp_path / "dl"))
    from_tar = import_cifar(str(make_tar(tree, tmp_path / "imgs.tar")), str(tmp_path / "dl"))
    for split in ("train", "test"):
        for a, b in zip(from_dir[split], from_tar[split]):
            np.testing.assert_array_equal(a, b)


def test_hidden_files_are_ignored(tmp_path):
    tree = write_tree(tmp_path / "tree", names=("0.png",))
    (tree / "train" / "cat" / "._0.png").write_bytes(b"AppleDouble junk")
    (tree / ".DS_Store").write_bytes(b"junk")
    images, _ = import_cifar(str(tree), "")["train"]
    assert len(images) == 10


def test_grayscale_and_rgba_images_are_converted_to_rgb(tmp_path):
    tree = write_tree(tmp_path / "tree", names=("0.png",))
    gray = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32).astype(np.uint8)
    Image.fromarray(gray, "L").save(tree / "train" / "cat" / "0.png")
    rgba = np.dstack([_pixels("x", 0, "y"), np.full((32, 32), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tree / "test" / "dog" / "0.png")
    splits = import_cifar(str(tree), "")
    np.testing.assert_array_equal(splits["train"][0][CLASSES.index("cat")], np.dstack([gray] * 3))
    np.testing.assert_array_equal(splits["test"][0][CLASSES.index("dog")], rgba[..., :3])


def _missing_class(tree: Path) -> str:
    for f in (tree / "train" / "truck").iterdir():
        f.unlink()
    (tree / "train" / "truck").rmdir()
    return "train"


def _unknown_class(tree: Path) -> str:
    (tree / "test" / "cat").rename(tree / "test" / "kitten")
    return "test/kitten"


def _undecodable(tree: Path) -> str:
    (tree / "train" / "dog" / "a.png").write_bytes(b"not an image at all")
    return "train/dog/a.png"


def _wrong_size(tree: Path) -> str:
    Image.new("RGB", (32, 31)).save(tree / "test" / "ship" / "b.png")
    return "test/ship/b.png"


def _empty_split(tree: Path) -> str:
    for d in (tree / "test").iterdir():
        for f in d.iterdir():
            f.unlink()
    return "test"


def _stray_file(tree: Path) -> str:
    (tree / "train" / "notes.txt").write_text("hi")
    return "train/notes.txt"


BAD_TREES = {
    "missing class folder": (_missing_class, "missing class folder"),
    "unknown class folder": (_unknown_class, "unknown class folder 'kitten'"),
    "undecodable file": (_undecodable, "cannot decode"),
    "image not 32x32": (_wrong_size, "32x31, expected 32x32"),
    "empty split": (_empty_split, "split has no images"),
    "file outside a class folder": (_stray_file, "unexpected file"),
}


@pytest.mark.parametrize("case", list(BAD_TREES))
@pytest.mark.parametrize("packed", [False, True], ids=["dir", "tar.gz"])
def test_bad_image_folder_names_offending_path_and_stage_writes_nothing(
    tmp_path, monkeypatch, case, packed
):
    spoil, message = BAD_TREES[case]
    tree = write_tree(tmp_path / "tree")
    offending = spoil(tree)
    source = make_tar(tree, tmp_path / "bad.tar.gz", "top") if packed else tree
    where = f"{source}:top/{offending}" if packed else str(tree / offending)
    with pytest.raises(CifarSourceError) as err:
        import_cifar(str(source), str(tmp_path / "dl"))
    assert where in str(err.value) and message in str(err.value)
    with pytest.raises(CifarSourceError):
        run_stage(tmp_path, monkeypatch, source)
    assert written(tmp_path / "out") == []


@pytest.mark.parametrize("name", ["nowhere.tar.gz", "nowhere"])
def test_missing_source_is_named_and_stage_writes_nothing(tmp_path, monkeypatch, name):
    with pytest.raises(CifarSourceError, match="does not exist") as err:
        run_stage(tmp_path, monkeypatch, tmp_path / name)
    assert str(tmp_path / name) in str(err.value)
    assert written(tmp_path / "out") == []


def test_corrupt_archive_is_named(tmp_path):
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"\x1f\x8b this is not gzip")
    with pytest.raises(CifarSourceError, match="cannot read as a tar archive") as err:
        import_cifar(str(bad), "")
    assert str(bad) in str(err.value)


# --- official python archive ----------------------------------------------------------------


def make_official_archive(path: Path, n_per_batch: int = 4, skip: str = "") -> dict:
    """A tiny cifar-10-python.tar.gz with the real pickle layout; returns the raw batches."""
    g = np.random.default_rng(1)
    batches = {
        name: {
            b"data": g.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            b"labels": g.integers(0, 10, n_per_batch).tolist(),
        }
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    }
    batches["batches.meta"] = {b"label_names": [c.encode() for c in CLASSES]}
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in batches.items():
            if name == skip:
                continue
            blob = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return batches


def test_official_reader_converts_planar_batches_to_nhwc(tmp_path, monkeypatch):
    archive = tmp_path / "dl" / cifar.OFFICIAL_FILENAME
    archive.parent.mkdir()
    batches = make_official_archive(archive)
    # Only the expected md5 is swapped: layout, unpickling and conversion are the real code.
    monkeypatch.setattr(cifar, "OFFICIAL_MD5", cifar.md5_file(archive))
    for source in ("official", str(archive)):  # already downloaded, and given as a path
        splits = import_cifar(source, str(tmp_path / "dl"))
        train_x, train_y = splits["train"]
        assert train_x.shape == (20, 32, 32, 3) and train_x.dtype == np.uint8
        assert train_y.dtype == np.int64
        raw = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
        i, y, x, c = 7, 3, 29, 2
        assert train_x[i, y, x, c] == raw[i, c * 1024 + y * 32 + x]
        np.testing.assert_array_equal(
            train_y, sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
        )
        test_x, test_y = splits["test"]
        np.testing.assert_array_equal(
            test_x, batches["test_batch"][b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        )
        np.testing.assert_array_equal(test_y, batches["test_batch"][b"labels"])


def test_official_archive_missing_a_batch_is_named(tmp_path):
    archive = tmp_path / cifar.OFFICIAL_FILENAME
    make_official_archive(archive, skip="data_batch_3")
    with pytest.raises(CifarSourceError, match=r"lacks batch file\(s\) \['data_batch_3'\]") as err:
        cifar.read_official_archive(archive, expected_md5=cifar.md5_file(archive))
    assert str(archive) in str(err.value)


@pytest.mark.parametrize("given_as", ["official", "path"])
def test_checksum_mismatch_names_file_and_both_md5s_and_stage_writes_nothing(
    tmp_path, monkeypatch, given_as
):
    archive = tmp_path / "dl" / cifar.OFFICIAL_FILENAME
    archive.parent.mkdir()
    archive.write_bytes(b"truncated download")
    actual = hashlib.md5(b"truncated download").hexdigest()
    source = "official" if given_as == "official" else archive
    with pytest.raises(CifarSourceError, match="checksum mismatch") as err:
        run_stage(tmp_path, monkeypatch, source)
    for part in (str(archive), cifar.OFFICIAL_MD5, actual):
        assert part in str(err.value)
    assert archive.read_bytes() == b"truncated download"  # not silently re-downloaded
    assert written(tmp_path / "out") == []


# --- the stage ------------------------------------------------------------------------------


def test_stage_writes_contract_npz_and_env_var_overrides_params(tmp_path):
    archive = make_tar(write_tree(tmp_path / "tree", names=("0.png",)), tmp_path / "a.tgz")
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: {tmp_path / 'absent'}\n  download_dir: {tmp_path}\n")
    out = tmp_path / "out"
    env = {"ADVHYBRID_CIFAR_SOURCE": str(archive), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, str(REPO / "src" / "download_cifar.py"), "--params", str(params), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for split in ("train", "test"):
        z = load_npz(out / f"{split}.npz", required=["images", "labels", "classes"])
        assert z["images"].shape == (10, 32, 32, 3) and z["images"].dtype == np.uint8
        assert z["labels"].dtype == np.int64 and z["labels"].tolist() == list(range(10))
        assert z["classes"].tolist() == list(CLASSES)
    # Without the override the params source is used, and it does not exist.
    del env["ADVHYBRID_CIFAR_SOURCE"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and f"{tmp_path / 'absent'}: CIFAR-10 source does not exist" in proc.stderr


@pytest.mark.integration
def test_shared_archive_has_full_cifar10(shared_cifar_archive, tmp_path):
    splits = import_cifar(str(shared_cifar_archive), str(tmp_path))
    for split, n in (("train", 5000), ("test", 1000)):
        images, labels = splits[split]
        assert images.shape == (10 * n, 32, 32, 3) and images.dtype == np.uint8
        assert np.bincount(labels, minlength=10).tolist() == [n] * 10
        assert 20 < images.mean() < 235  # decoded pixels, not a blank buffer


def test_a_relative_source_in_a_queued_experiment_is_read_from_the_queuing_repository(tmp_path):
    repo = tmp_path / "clone"
    copy = repo / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    copy.mkdir(parents=True)
    rel = "../shared/data/cifar10-jpeg.tar.gz"
    assert cifar.source_path(rel, cwd=copy) == repo / rel
    assert cifar.source_path(rel, cwd=copy / "src") == repo / rel
    # In the repository itself (and for absolute paths) nothing changes.
    assert cifar.source_path(rel, cwd=repo) == Path(rel)
    assert cifar.source_path(str(tmp_path / "x.tar.gz"), cwd=copy) == tmp_path / "x.tar.gz"
