"""Stage train@<model>: one defended model trained on Hybrid CIFAR-10 (III-C, Table 2)."""
from __future__ import annotations

import argparse
import time

from advhybrid.data.cifar import CLASSES
from advhybrid.device import pick_device, set_threads
from advhybrid.evaluation.metrics import accuracy_by_kind, classification_metrics, confusion_rows
from advhybrid.io import load_npz, save_csv, save_json
from advhybrid.models import build_model, count_parameters, save_model
from advhybrid.params import load_section
from advhybrid.training import TrainConfig, fit, predict, saved_epoch

SPLIT_KEYS = ["images", "labels", "is_adv"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/hybrid")
    args = ap.parse_args()
    p = load_section("train", args.params)
    if args.model not in p["models"]:
        raise SystemExit(f"{args.params}: '{args.model}' is not in train.models {list(p['models'])}")
    cfg = TrainConfig.from_section(p, epochs=p.per_model("epochs", args.model, int))
    width = p.per_model("width", args.model, float)
    set_threads()
    device = pick_device()

    train, val, test = (load_npz(f"{args.data}/{s}.npz", SPLIT_KEYS) for s in ("train", "val", "test"))
    t0 = time.perf_counter()
    model = build_model(args.model, num_classes=10, width=width, seed=cfg.seed)
    model, history = fit(model, (train["images"], train["labels"]), (val["images"], val["labels"]), cfg,
                         device, checkpoint=f"checkpoints/train/{args.model}.pt", name=args.model)
    pred = predict(model, test["images"], device).argmax(1).numpy()
    scores = classification_metrics(test["labels"], pred)
    by_kind = accuracy_by_kind(test["labels"], pred, test["is_adv"])
    best = saved_epoch(history)  # Table 2 describes the saved weights, not the last epoch
    save_model(f"models/defended/{args.model}.pt", model, args.model, 10, width, best_epoch=best["epoch"])
    save_json(f"metrics/train/{args.model}.json", {
        "epochs": len(history),
        "best_epoch": best["epoch"],
        "loss": best["train_loss"],
        "train_acc": best["train_acc"],
        "val_acc": best["val_acc"],
        "test_acc": scores["accuracy"],
        "precision": scores["precision"],
        "recall": scores["recall"],
        "test_acc_real": by_kind["acc_real"],
        "test_acc_adv": by_kind["acc_adv"],
        "params": count_parameters(model),
        "minutes": round((time.perf_counter() - t0) / 60, 2),
    })
    save_csv(f"plots/train/{args.model}.csv", history)
    save_csv(f"plots/confusion/{args.model}.csv", confusion_rows(test["labels"], pred, list(CLASSES)))
    print(f"{args.model}: test accuracy {scores['accuracy']:.4f} "
          f"(real {by_kind['acc_real']:.4f}, adversarial {by_kind['acc_adv']:.4f})")


if __name__ == "__main__":
    main()
