"""Step 2-3 of section II-B: raise k until the target's label changes, keep the successes.

For each image the target classifies correctly, G(x, t) is computed once and k walks the grid
k_min, k_min + k_step, ..., k_max; the first k whose (uint8-rounded) x_adv is misclassified wins.
The grid is a short loop of batched forwards over the images still unbroken, never per image.
Every forward here runs in fp32, even where training uses bf16 autocast: whether a label flips
is decided at the decision boundary, where bf16 rounding would flip some labels back in an fp32
re-check, and the stored image must be one the target (in fp32) really misclassifies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from advhybrid.attacks.advgan import apply_perturbation, quantise, second_class
from advhybrid.device import images_to_device, memory_format, strict_fp32, to_float, to_uint8
from advhybrid.params import ParamsError


class KGridError(ParamsError):
    """The k grid from params is empty or malformed."""


def k_grid(k_min: float, k_max: float, k_step: float, where: str = "adversarial") -> np.ndarray:
    """k_min..k_max inclusive in steps of k_step; float error never drops or adds the endpoint."""
    names = f"{where}.k_min={k_min!r}, {where}.k_max={k_max!r}, {where}.k_step={k_step!r}"
    try:
        lo, hi, step = float(k_min), float(k_max), float(k_step)
    except (TypeError, ValueError):
        raise KGridError(f"k grid: {names} must all be numbers") from None
    if not all(map(math.isfinite, (lo, hi, step))):
        raise KGridError(f"k grid: {names} must be finite")
    if step <= 0:
        raise KGridError(f"k grid is empty: {names}; k_step must be > 0")
    if lo <= 0:
        raise KGridError(f"k grid: {names}; k_min must be > 0 (k = 0 is the clean image)")
    if hi < lo:
        raise KGridError(f"k grid is empty: {names}; k_max must be >= k_min")
    n = math.floor((hi - lo) / step + 1e-9) + 1
    return np.round(lo + step * np.arange(n), 10)


@dataclass
class KSearchResult:
    """Successful adversarial examples only (numpy, on CPU), plus the counts behind the rates."""

    index: np.ndarray         # position in the input array
    images: np.ndarray        # uint8 N x 32 x 32 x 3, exactly what the target misclassified
    labels: np.ndarray        # true class
    target_class: np.ndarray  # t, the target's second most likely class on the clean image
    k: np.ndarray             # smallest successful k (float32)
    pred: np.ndarray          # target's label for the adversarial image at that k
    n_images: int
    n_attacked: int           # images the target classified correctly


@torch.no_grad()
@strict_fp32()
def k_search_batch(
    target: nn.Module, G: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, grid: torch.Tensor, device: torch.device
) -> dict[str, torch.Tensor]:
    """Per image of one batch: attacked, success, k index (-1 = none), pred, t, adversarial uint8."""
    x = to_float(x_u8)
    logits = target(x).float()
    t = second_class(logits)
    delta = G(x, t).float()
    pred = logits.argmax(1)
    attacked = pred == y  # images the target already gets wrong are not attacked
    k_idx = torch.full_like(y, -1)
    adv = x_u8.clone()
    for j in range(len(grid)):
        todo = (attacked & (k_idx < 0)).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        # Rounded to uint8 before the forward: the label we record is the label of the stored image.
        xa = quantise(apply_perturbation(x[todo], delta[todo], grid[j]))
        p = target(xa).argmax(1)
        hit = p != y[todo]
        won = todo[hit]
        k_idx[won], pred[won], adv[won] = j, p[hit], to_uint8(xa[hit])
    return {"attacked": attacked, "success": k_idx >= 0, "k_idx": k_idx, "pred": pred, "t": t, "adv": adv}


def run_k_search(
    target: nn.Module,
    G: nn.Module,
    images_u8: np.ndarray,
    labels: np.ndarray,
    grid: np.ndarray,
    device: torch.device,
    batch_size: int = 256,
    desc: str = "k search",
) -> KSearchResult:
    """k search over a whole array of images, batched; returns the successes only."""
    if len(grid) == 0:
        raise KGridError("k grid is empty (nothing to search)")
    fmt = memory_format(device)
    target = target.to(device, memory_format=fmt).eval()
    G = G.to(device, memory_format=fmt).eval()
    x_all = images_to_device(images_u8, device)
    y_all = torch.as_tensor(labels, dtype=torch.long, device=device)
    grid_t = torch.as_tensor(grid, dtype=torch.float32, device=device)
    parts, n_attacked = [], 0
    for i in tqdm(range(0, len(x_all), batch_size), desc=desc, leave=False):
        r = k_search_batch(target, G, x_all[i : i + batch_size], y_all[i : i + batch_size], grid_t, device)
        ok = r["success"].nonzero().squeeze(1)
        n_attacked += int(r["attacked"].sum())
        parts.append({
            "index": ok + i, "images": r["adv"][ok], "labels": y_all[i : i + batch_size][ok],
            "target_class": r["t"][ok], "k": grid_t[r["k_idx"][ok]], "pred": r["pred"][ok],
        })
    if parts:
        cat = {key: torch.cat([p[key] for p in parts]).cpu().numpy() for key in parts[0]}
    else:
        cat = {"index": np.zeros(0, np.int64), "images": np.zeros((0, 32, 32, 3), np.uint8),
               "labels": np.zeros(0, np.int64), "target_class": np.zeros(0, np.int64),
               "k": np.zeros(0, np.float32), "pred": np.zeros(0, np.int64)}
    return KSearchResult(**cat, n_images=len(x_all), n_attacked=n_attacked)


@torch.no_grad()
@strict_fp32()
def evaluate_at_k(
    target: nn.Module,
    G: nn.Module,
    images_u8: np.ndarray,
    labels: np.ndarray,
    k: float,
    device: torch.device,
    batch_size: int = 256,
) -> dict[str, float | int]:
    """Attack success at one fixed k, over the images the target classifies correctly.

    untargeted_success: pred != y; targeted_success: pred == t; mean_l2 / mean_linf: of the
    (uint8-rounded) perturbation in [0, 1] units, over all attacked images, successful or not.
    """
    fmt = memory_format(device)
    target = target.to(device, memory_format=fmt).eval()
    G = G.to(device, memory_format=fmt).eval()
    x_all = images_to_device(images_u8, device)
    y_all = torch.as_tensor(labels, dtype=torch.long, device=device)
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # attacked, untargeted, targeted, l2, linf
    unit_sum = torch.zeros(x_all[0].numel() if len(x_all) else 1, dtype=torch.float64, device=device)
    for i in range(0, len(x_all), batch_size):
        x, y = to_float(x_all[i : i + batch_size]), y_all[i : i + batch_size]
        logits = target(x).float()
        ok = logits.argmax(1) == y
        if not ok.any():  # nothing to attack in this batch (and InstanceNorm refuses an empty one)
            continue
        x, y, t = x[ok], y[ok], second_class(logits)[ok]
        delta = G(x, t).float()
        unit_sum += F.normalize(delta.flatten(1).double(), dim=1).sum(0)
        xa = quantise(apply_perturbation(x, delta, k))
        p = target(xa).argmax(1)
        diff = (xa - x).flatten(1)
        sums += torch.stack([
            ok.sum(), (p != y).sum(), (p == t).sum(), diff.norm(dim=1).sum(), diff.abs().amax(1).sum()
        ]).double()
    n_att, unt, tgt, l2, linf = sums.tolist()
    rate = lambda v: round(v / n_att, 6) if n_att else None  # noqa: E731
    # Mean cosine similarity of G(x, t) over all pairs of distinct attacked images, from the sum
    # of unit vectors (|sum u|^2 = n + sum over pairs i != j of u_i.u_j), so no n x n matrix.
    # Near 1: G learned one image-independent ("universal") perturbation.
    cosine = ((unit_sum.square().sum().item() - n_att) / (n_att * (n_att - 1))) if n_att > 1 else None
    return {
        "n_images": len(x_all), "n_attacked": int(n_att),
        "clean_accuracy": round(n_att / len(x_all), 6) if len(x_all) else None,
        "untargeted_success": rate(unt), "targeted_success": rate(tgt),
        "mean_l2": rate(l2), "mean_linf": rate(linf), "k": float(k),
        "perturbation_cosine": round(cosine, 6) if cosine is not None else None,
    }


def summarize_k_search(res: dict[str, np.ndarray], n_attacked: int, n_images: int) -> dict[str, float | int | None]:
    """One target's entry of metrics/adversarial.json from its stored AEs (k, l2, linf, ssim,
    pred, target_class arrays): how many were fooled, at what k, how visible."""
    n = len(res["k"])
    stat = lambda f, v: round(float(f(v)), 6) if n else None  # noqa: E731
    return {
        "n_images": n_images, "n_attacked": n_attacked, "n_success": n,
        "success_rate": round(n / n_attacked, 6) if n_attacked else None,
        "mean_k": stat(np.mean, res["k"]), "median_k": stat(np.median, res["k"]),
        "mean_l2": stat(np.mean, res["l2"]), "mean_linf": stat(np.mean, res["linf"]),
        "mean_ssim": stat(np.mean, res["ssim"]),
        "targeted_rate": stat(np.mean, res["pred"] == res["target_class"]),
    }
