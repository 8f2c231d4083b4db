"""Stage download_cifar: CIFAR-10 -> data/raw/cifar10/{train,test}.npz (images, labels, classes).

The source is params `data.source` unless $ADVHYBRID_CIFAR_SOURCE overrides it (offline machines).
"""
from __future__ import annotations

import time

import numpy as np

from advhybrid.data.cifar import CLASSES, import_cifar, resolve_source
from advhybrid.io import check_images, save_npz
from advhybrid.params import load_section, stage_parser


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, paths={"out": "output folder: {train,test}.npz"})
    args = ap.parse_args(argv)

    p = load_section("data", args.params)
    source = resolve_source(p.typed("source", str))
    t0 = time.perf_counter()
    splits = import_cifar(source, p.typed("download_dir", str))
    # Write only once both splits imported, so a bad source leaves no npz behind.
    for split, (images, labels) in splits.items():
        path = args.out / f"{split}.npz"
        check_images(path, images)
        save_npz(path, images=images, labels=labels, classes=np.array(CLASSES))
        counts = np.bincount(labels, minlength=len(CLASSES)).tolist()
        print(f"{path}: {len(images)} images, per class {counts}")
    print(f"imported CIFAR-10 from {source} in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
