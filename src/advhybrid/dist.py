"""torch.distributed in one place: who am I, how many are we, and a BatchNorm that sees them all.

A stage launched by `torchrun` (dvc.yaml: `python -m torch.distributed.run --standalone
--nproc_per_node=${dist.nproc_per_node} ...`) finds WORLD_SIZE, RANK and LOCAL_RANK in its
environment; `init` joins the process group (NCCL on GPUs, Gloo on CPUs) only when WORLD_SIZE
is above 1. With one process nothing is initialised and every caller takes the code path of a
plain `python` run, so its outputs stay byte for byte what they were.

The rules every training loop here follows (docs/gpu.md, "Several GPUs"):
- every rank holds the whole uint8 dataset and draws the same seeded permutation, and each takes
  its own contiguous part (`shard`) of every global batch, so the global batch stays the params'
  `batch_size` whatever the world size;
- gradients are averaged by DistributedDataParallel;
- BatchNorm is synchronised (`sync_batchnorm`): a rank's part of a batch of 100 on 8 GPUs is
  12 or 13 images, and per-rank statistics over so few would change the recipe;
- only rank 0 (`is_main`) writes files, and a `barrier` after each checkpoint means every rank
  resumes from the same one.
"""
from __future__ import annotations

import atexit
import inspect
import os

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes checkpoints, metrics, plots and models."""
    return rank() == 0


def _env_int(key: str, default: int) -> int:
    raw = os.environ.get(key, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"${key}={raw!r}: expected a whole number (torchrun sets it)") from None


def init(device: torch.device) -> torch.device:
    """Join the process group when torchrun started more than one process; return the device
    this rank trains on (cuda:LOCAL_RANK on GPUs). With WORLD_SIZE 1 (or unset) it does nothing."""
    if _env_int("WORLD_SIZE", 1) <= 1 or dist.is_initialized():
        return device
    local = _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    atexit.register(destroy)
    return device


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def ddp(module: nn.Module, device: torch.device, sync_buffers: bool = True) -> nn.Module:
    """DistributedDataParallel around `module` on this rank's device. `sync_buffers=False` when
    the buffers are kept equal by other means (synchronised BatchNorm): no broadcast per forward."""
    kw = {}
    if not sync_buffers:  # renamed in PyTorch 2.13; older versions know only broadcast_buffers
        params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
        kw = {"forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers": False}
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, **kw)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Sum (or `op="max"`) `t` over the ranks, in place; returns it (unchanged with one process).
    NCCL reduces only GPU tensors: a CPU one makes the trip to this rank's GPU and back."""
    if world_size() > 1:
        red = dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM
        if t.device.type == "cpu" and dist.get_backend() == "nccl":
            on_gpu = t.cuda()
            dist.all_reduce(on_gpu, op=red)
            t.copy_(on_gpu)
        else:
            dist.all_reduce(t, op=red)
    return t


def check_same(value: int, what: str) -> None:
    """Stop, on every rank at once, when the ranks disagree on `value` (where a run resumes)."""
    if world_size() <= 1:
        return
    t = all_reduce_sum(torch.tensor([value, -value], dtype=torch.int64), op="max")
    if t[0] != -t[1]:
        raise RuntimeError(f"{what}: the ranks disagree ({-t[1].item()} to {t[0].item()}); every rank must read "
                           "the same checkpoints/ (on several machines, a folder they all mount)")


def shard(n: int) -> slice:
    """This rank's contiguous rows of a global batch of `n`: sizes differ by at most one (the
    first n % world ranks take one more), and the parts of all ranks tile the batch in order."""
    w, r = world_size(), rank()
    q, extra = divmod(n, w)
    lo = r * q + min(r, extra)
    return slice(lo, lo + q + (r < extra))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator for this rank's private randomness in one epoch (an adversarial start,
    say): seeded by (seed, epoch, rank), so a resumed run draws what an uninterrupted one did
    without a checkpoint holding every rank's generator."""
    return torch.Generator().manual_seed(((seed * 1_000_003) + epoch) * 1_009 + rank())


# ----------------------------------------------------------------------------- BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        g = g.contiguous().clone()
        dist.all_reduce(g)
        return g


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with statistics over the whole global batch, for CPUs: torch's SyncBatchNorm
    only runs on GPUs. Two all-reduces per layer (sum and count, then the centred second moment:
    two passes, no cancellation); the backward all-reduces their gradients. Evaluation, and a
    single process, use the running statistics exactly as BatchNorm2d does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        xf = x.float()
        count = xf.new_tensor([x.numel() / x.shape[1]])
        s = _AllReduceSum.apply(torch.cat([xf.sum((0, 2, 3)), count]))
        n = s[-1].detach()
        mean = s[:-1] / n
        centred = xf - mean[None, :, None, None]
        var = _AllReduceSum.apply(centred.square().sum((0, 2, 3))) / n
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), m)
        return y.to(x.dtype)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` with every BatchNorm2d synchronised over the ranks (in place, as torch's
    convert_sync_batchnorm): SyncBatchNorm on GPUs, GlooSyncBatchNorm on CPUs. The new modules
    take over the old ones' parameters and buffers under the same state_dict keys, so
    checkpoints and saved models keep their format. One process: `model` as it is."""
    if world_size() <= 1:
        return model
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(m: nn.Module) -> nn.Module:
        if isinstance(m, nn.BatchNorm2d) and not isinstance(m, GlooSyncBatchNorm):
            new = GlooSyncBatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
            if m.affine:
                new.weight, new.bias = m.weight, m.bias
            if m.track_running_stats:
                new.running_mean, new.running_var = m.running_mean, m.running_var
                new.num_batches_tracked = m.num_batches_tracked
            new.train(m.training)
            return new
        for name, child in m.named_children():
            m.add_module(name, convert(child))
        return m

    return convert(model)
