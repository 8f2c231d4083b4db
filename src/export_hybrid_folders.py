"""Export data/hybrid/*.npz as the paper's image folders (IV-A), for people who want the images.

Layout: <out>/<split>/<class>/0/<source_id>.png for real images and
<out>/<split>/<class>/1/<source_id>_<target>.png for adversarial ones ("0" real, "1"
adversarial, as in the paper). A command, not a DVC stage: the npz files are the pipeline's
data; this is a view of them. Everything is written into a temporary folder beside <out>,
which replaces <out> only once every image is written.

    python src/export_hybrid_folders.py --out exports/hybrid_cifar10
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from advhybrid.data.hybrid import SPLITS
from advhybrid.io import atomic_dir
from advhybrid.io import check_images, load_npz

KEYS = ("images", "labels", "is_adv", "source_id", "target_model", "classes", "target_names")


def export_split(arrays: dict[str, np.ndarray], root: Path, desc: str = "") -> int:
    """Write one split's images under `root`; returns how many were written."""
    classes = [str(c) for c in arrays["classes"]]
    targets = [str(t) for t in arrays["target_names"]]
    for c in classes:
        for kind in ("0", "1"):
            (root / c / kind).mkdir(parents=True, exist_ok=True)
    n = len(arrays["images"])
    for i in tqdm(range(n), desc=desc, unit="img"):
        label, adv = int(arrays["labels"][i]), int(arrays["is_adv"][i])
        sid = int(arrays["source_id"][i])
        name = f"{sid}_{targets[arrays['target_model'][i]]}.png" if adv else f"{sid}.png"
        # "xb": a second image with the same name means a broken split, never a silent overwrite
        with open(root / classes[label] / str(adv) / name, "xb") as f:
            Image.fromarray(arrays["images"][i]).save(f, format="PNG")
    return n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hybrid", default="data/hybrid", type=Path, help="folder of {train,val,test}.npz")
    ap.add_argument("--out", default="exports/hybrid_cifar10", type=Path)
    ap.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    args = ap.parse_args(argv)

    data = {}
    for s in args.splits:  # read and check everything before writing anything
        path = args.hybrid / f"{s}.npz"
        data[s] = load_npz(path, required=KEYS)
        check_images(path, data[s]["images"])
    with atomic_dir(args.out) as tmp:
        total = sum(export_split(data[s], tmp / s, desc=f"export {s}") for s in args.splits)
    print(f"wrote {total} PNG images to {args.out}/<split>/<class>/{{0,1}}/")


if __name__ == "__main__":
    main()
