"""Where tensors live and how images become network inputs.

One place decides the device, the autocast dtype and the memory format, so every stage gets
the GPU recipe (data on the device, bf16 autocast, channels_last) and the CPU stays plain fp32.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import torch


def pick_device(requested: str | None = None) -> torch.device:
    """`requested`, else $ADVHYBRID_DEVICE, else CUDA when present, else CPU."""
    name = requested or os.environ.get("ADVHYBRID_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; on CPU a no-op, since CPU bf16 convolutions are slower than fp32."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def images_to_device(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move N x 32 x 32 x 3 uint8 images to `device` once, still as uint8 (4x less memory)."""
    t = torch.as_tensor(images)
    if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected N x H x W x 3 uint8 images, got {tuple(t.shape)} {t.dtype}")
    return t.to(device, non_blocking=True)


def to_float(batch_u8: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1]. The permute is free: the result is channels_last."""
    return batch_u8.permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(batch: torch.Tensor) -> torch.Tensor:
    """float NCHW in [0, 1] -> uint8 NHWC, rounded (not truncated) so a round trip is exact."""
    return batch.clamp(0, 1).mul(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def set_threads() -> None:
    """Honour $ADVHYBRID_THREADS (CI and the 2-core machine pin it); otherwise torch's default."""
    n = os.environ.get("ADVHYBRID_THREADS")
    if n:
        torch.set_num_threads(int(n))
