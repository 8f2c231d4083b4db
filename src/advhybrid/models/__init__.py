"""Model zoo: CIFAR-10 (32x32) classifiers by name, and their checkpoints.

    model = build_model("repvgg_a2", num_classes=10, width=0.5)
    save_model("models/repvgg_a2.pt", model, epochs=3)   # build arguments from the model
    model, info = load_model("models/repvgg_a2.pt")

Every model takes float NCHW images in [0, 1] and normalises them itself, so attacks and the
GAN work in pixel space. `width` scales every channel count, keeping the depth and block types:
width 1 is the paper's network, a fraction of it a fast CPU stand-in with the same structure.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..io import ContractError, save_torch
from .mobilenet import mobilenetv2
from .repvgg import repvgg_a2
from .resnet import resnet50, resnet56
from .shufflenet import shufflenetv2
from .vgg import vgg19bn

_FAMILIES: dict[str, Callable[[int, Callable[[int], int]], nn.Module]] = {
    "resnet50": resnet50,
    "vgg19bn": vgg19bn,
    "shufflenetv2": shufflenetv2,
    "repvgg_a2": repvgg_a2,
    "mobilenetv2": mobilenetv2,
    "resnet56": resnet56,
}
MODEL_NAMES: tuple[str, ...] = tuple(_FAMILIES)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
_CHECKPOINT_KEYS = ("state_dict", "name", "num_classes", "width", "reparameterized", "meta")


def scale_channels(c: int, width: float, divisor: int = 4, minimum: int = 8) -> int:
    """c * width rounded to a multiple of 4 (so every width-1 count is kept exactly and halves
    stay even for ShuffleNet's split), never below `minimum`."""
    return max(minimum, int(c * width / divisor + 0.5) * divisor)


class Classifier(nn.Module):
    """[0, 1] images -> CIFAR normalisation -> `body` -> logits."""

    def __init__(self, body: nn.Module, name: str, num_classes: int, width: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1), persistent=False)
        self.body = body
        self.build_args = {"name": name, "num_classes": num_classes, "width": width}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)

    @property
    def reparameterized(self) -> bool:
        return bool(getattr(self.body, "reparameterized", False))

    def reparameterize(self) -> "Classifier":
        """Fold RepVGG's training-time branches into single 3x3 convs, in place."""
        if not hasattr(self.body, "reparameterize"):
            raise TypeError(f"{self.build_args['name']} has no re-parameterisable blocks (only repvgg_a2 has)")
        self.body.reparameterize()
        return self


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def build_model(name: str, num_classes: int = 10, width: float = 1.0, seed: int | None = None) -> Classifier:
    """A freshly initialised classifier for 32x32 [0, 1] images, by name (see MODEL_NAMES).

    `seed` makes the initial weights a function of the seed alone (the global RNG is left as it
    was); None draws them from the global RNG.
    """
    if name not in _FAMILIES:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    try:
        w = float(width)
    except (TypeError, ValueError):
        w = math.nan
    if not math.isfinite(w) or w <= 0:
        raise ValueError(f"model width must be a positive number, got {width!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        body = _FAMILIES[name](num_classes, lambda c: scale_channels(c, w))
        _init(body)
    return Classifier(body, name, num_classes, w)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model(path: str | os.PathLike, model: nn.Module, name: str | None = None,
               num_classes: int | None = None, width: float | None = None, **meta: Any) -> None:
    """Write {state_dict, build arguments, reparameterized, meta} atomically; `meta` holds plain
    values (epochs, accuracy...) so the file loads with torch.load(weights_only=True).

    The build arguments are the model's own (`build_model` records them); any given here must
    agree with them, so a file can never describe another network than the weights it holds.
    """
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    built = getattr(model, "build_args", None)
    given = {"name": name, "num_classes": num_classes, "width": width}
    if built is None and None in given.values():
        raise ValueError(f"{path}: a model not made by build_model needs name, num_classes and width")
    args = {k: given[k] if given[k] is not None else built[k] for k in given}
    args["width"] = float(args["width"])
    if built is not None and built != args:
        raise ValueError(f"{path}: model was built with {built} but is being saved as {args}")
    if args["name"] not in _FAMILIES:
        raise ValueError(f"{path}: unknown model {args['name']!r}; valid names: {', '.join(MODEL_NAMES)}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_torch(path, {"state_dict": state, **args,
                      "reparameterized": bool(getattr(model, "reparameterized", False)), "meta": meta})


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[Classifier, dict]:
    """Rebuild a model saved by save_model; returns (model in eval mode, info without weights)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ContractError(f"{path}: cannot be read as a model checkpoint ({e})") from e
    missing = [k for k in _CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ContractError(f"{path}: not a save_model checkpoint, missing key(s) {missing}")
    try:
        model = build_model(ckpt["name"], ckpt["num_classes"], ckpt["width"])
        if ckpt["reparameterized"]:
            model.reparameterize()
        model.load_state_dict(ckpt["state_dict"])
    except (ValueError, TypeError, RuntimeError) as e:
        raise ContractError(f"{path}: checkpoint does not match its build arguments ({e})") from e
    info = {k: ckpt[k] for k in _CHECKPOINT_KEYS if k != "state_dict"} | {"path": str(path)}
    return model.to(map_location).eval(), info
