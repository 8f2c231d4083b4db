"""Run under torchrun by tests/test_ddp.py: `python -m torch.distributed.run --standalone
--nproc_per_node=N tests/ddp_worker.py MODE OUT`. Rank 0 gathers what every rank ended with
(weights, history, the files it opened for writing) and alone writes OUT/MODE.pt.

MODE: `fit` (a BatchNorm network, no augmentation, and a GAN, one epoch each), `die` (fit a
checkpointed run and SIGKILL it after epoch 2), `resume` (the same run again, to its end).
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))  # under torchrun: conftest beside this file
from advhybrid import dist  # noqa: E402
from advhybrid.attacks.advgan import GanConfig, train_generator  # noqa: E402
from advhybrid.device import set_threads  # noqa: E402
from advhybrid.training import TrainConfig, fit  # noqa: E402
from conftest import synthetic_cifar  # noqa: E402

WRITES: list[str] = []


def record_writes(event: str, args: tuple) -> None:
    """Every file this process opens for writing, and every rename (an atomic write's last step)."""
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & (os.O_WRONLY | os.O_RDWR):
            WRITES.append(os.fsdecode(args[0]))
    elif event in ("os.rename", "os.replace", "os.mkdir", "os.remove"):
        WRITES.append(f"{event} {args[0]}")


def bn_net() -> nn.Module:
    """Small, but with BatchNorm in it: what the synchronised statistics are tested on."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


# 100 images in global batches of 27: parts of 14 and 13 images, and a last batch of 19 (10 + 9)
DATA = synthetic_cifar(10, seed=1)
FIT = TrainConfig(epochs=1, batch_size=27, augment=False, lr=3e-3)
RESUME = TrainConfig(epochs=3, batch_size=27, augment=True, lr=3e-3, restart_epochs=2)
GAN = GanConfig(gen_width=4, gen_res_blocks=1, disc_width=4, epochs=1, batch_size=16, log_every=2)


def gan_target() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10)).eval()


def main(mode: str, out: Path) -> None:
    set_threads()
    device = dist.init(torch.device("cpu"))
    if dist.rank() != 0:
        sys.addaudithook(record_writes)
    x, y = DATA
    result: dict = {"world": dist.world_size()}
    if mode == "fit":
        model, hist = fit(bn_net(), (x, y), (x[:30], y[:30]), FIT, device, name="bn_net")
        result |= {"model": model.state_dict(), "history": hist}
        target = gan_target()
        with torch.no_grad():
            y_gan = target(torch.as_tensor(x).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()
        G, gan_hist = train_generator(target, x, y_gan, GAN, device)
        result |= {"G": G.state_dict(), "gan_history": gan_hist}
    else:
        def kill_after_epoch_2(row: dict) -> None:
            if mode == "die" and row["epoch"] == 2:
                os.kill(os.getpid(), signal.SIGKILL)  # a kill, not an exception: nothing runs after it

        model, hist = fit(bn_net(), (x, y), (x[:30], y[:30]), RESUME, device, name="bn_net",
                          checkpoint=out / "ckpt.pt", on_epoch=kill_after_epoch_2, select_best=False)
        result |= {"model": model.state_dict(), "history": hist}
    result["writes"] = list(WRITES)
    gathered = [None] * dist.world_size()
    torch.distributed.all_gather_object(gathered, result) if dist.world_size() > 1 else gathered.__setitem__(0, result)
    if dist.is_main():
        torch.save(gathered, out / f"{mode}.pt")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
