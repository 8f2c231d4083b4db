"""Where tensors live and how images become network inputs.

One place decides the device, the autocast dtype and the memory format, so every stage gets
the same recipe: data on the device, channels_last, and bf16 autocast on CUDA and on CPUs with
native bf16 (AVX512-BF16/AMX), where oneDNN's bf16 convolutions train our reference models
1.2-1.8x faster than fp32 (bench/cpu_precision.py); elsewhere the CPU stays fp32.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import torch


def pick_device(requested: str | None = None) -> torch.device:
    """`requested`, else $ADVHYBRID_DEVICE, else CUDA when present, else CPU."""
    name = requested or os.environ.get("ADVHYBRID_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        # Our shapes are fixed (32x32, one batch size per stage): cuDNN's autotuner pays off at once.
        torch.backends.cudnn.benchmark = True
    return device


@contextlib.contextmanager
def strict_fp32():
    """fp32 that is really fp32 inside (a context manager or a decorator): on CUDA, cuDNN
    convolutions and matmuls default to TF32 (10-bit mantissa), so a label decided at the
    decision boundary could flip in an fp32 re-check. The CPU never uses TF32: a no-op there."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


def cpu_bf16() -> bool:
    """bf16 autocast on the CPU? $ADVHYBRID_CPU_BF16=0/1 decides; otherwise only where the CPU
    has native bf16, since emulated bf16 is slower than fp32."""
    env = os.environ.get("ADVHYBRID_CPU_BF16")
    if env is not None:
        return env.strip().lower() not in ("", "0", "false", "no", "off")
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check and check())


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, and on the CPU where `cpu_bf16()`; otherwise a no-op."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and cpu_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    # channels_last is oneDNN's native layout too: 1.1-1.3x on CPU for all but the narrowest nets.
    return torch.channels_last


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
    """Honour $ADVHYBRID_THREADS (CI and the 2-core machine pin it); otherwise torch's default.
    It counts the threads of the whole machine: under torchrun each of the $LOCAL_WORLD_SIZE
    processes on it takes its share (at least one), so two ranks on 2 cores do not run 4 threads."""
    raw = os.environ.get("ADVHYBRID_THREADS")
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"$ADVHYBRID_THREADS={raw!r}: expected a whole number of CPU threads >= 1 "
                             "(or unset it for torch's default)")
        torch.set_num_threads(max(1, n // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
