"""Training images per second: our trainer vs a plain torchvision DataLoader + fp32 loop.

Both sides train the same model on the same images for the same number of steps; what
differs is the input pipeline (uint8 on the device + batched tensor augmentation vs a
per-image torchvision transform in a DataLoader) and, on CUDA, bf16 autocast + channels_last.

    python bench/train_throughput.py                    # CPU, reference width
    python bench/train_throughput.py --device cuda --width 1 --images 20000
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

from advhybrid.device import pick_device, set_threads
from advhybrid.models import MODEL_NAMES, build_model
from advhybrid.training import TrainConfig, fit


class PlainCifar(Dataset):
    """The textbook input pipeline: one image at a time through torchvision transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = torch.as_tensor(images).permute(0, 3, 1, 2), torch.as_tensor(labels)
        self.tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.tf(self.images[i]), self.labels[i]


def plain_loop(model, images, labels, device, batch_size: int, workers: int) -> float:
    loader = DataLoader(PlainCifar(images, labels), batch_size=batch_size, shuffle=True, num_workers=workers)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4)
    t0 = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - t0)


def ours(model, images, labels, device, batch_size: int, compile: bool) -> float:
    cfg = TrainConfig(epochs=1, batch_size=batch_size, restart_epochs=1, compile=compile)
    t0 = time.perf_counter()
    fit(model, (images, labels), None, cfg, device, name="bench")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "vgg19bn", "shufflenetv2", "repvgg_a2", "resnet56", "mobilenetv2"])
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default=None)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    set_threads()
    device = pick_device(args.device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.images).astype(np.int64)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# device {device} ({gpu}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"width {args.width}, {args.images} images, batch {args.batch_size}")
    print(f"{'model':<14}{'ours img/s':>12}{'plain img/s':>13}{'speed-up':>10}")
    for name in args.models:
        if name not in MODEL_NAMES:
            raise SystemExit(f"unknown model {name!r}; choose from {MODEL_NAMES}")
        ours(build_model(name, width=args.width), images[:200], labels[:200], device, args.batch_size, args.compile)  # warm-up
        a = ours(build_model(name, width=args.width), images, labels, device, args.batch_size, args.compile)
        b = plain_loop(build_model(name, width=args.width), images, labels, device, args.batch_size, args.workers)
        print(f"{name:<14}{a:>12.1f}{b:>13.1f}{a / b:>9.2f}x", flush=True)


if __name__ == "__main__":
    main()
