"""Stage eval_mixed: every defended model on 1,000-image draws at 97/3, 95/5, 90/10 (Tables 3-5)."""
from __future__ import annotations



from advhybrid.device import pick_device, set_threads
from advhybrid.evaluation.figures import interval_bars
from advhybrid.evaluation.metrics import accuracy_by_kind, classification_metrics
from advhybrid.evaluation.mixed import mixed_eval
from advhybrid.io import load_npz, save_json
from advhybrid.models import load_model
from advhybrid.params import RECORD, load_section, stage_parser
from advhybrid.training import predict


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, paths={
        "models": "the defended models: <model>.pt", "test": "the Hybrid test split (npz)", "metrics": RECORD,
        "plots": "output folder: <ratio>.png, accuracy with intervals"})
    args = ap.parse_args(argv)
    p = load_section("eval_mixed", args.params)
    fractions = [float(f) for f in p["adv_fractions"]]
    n, draws, seed = p.typed("n_images", int), p.typed("draws", int), p.typed("seed", int)
    set_threads()
    device = pick_device()
    test = load_npz(args.test, ["images", "labels", "is_adv"])
    y, is_adv = test["labels"], test["is_adv"].astype(bool)

    results, bars = {}, []
    for name in p["models"]:
        model, _ = load_model(f"{args.models}/{name}.pt", map_location=device)
        pred = predict(model.to(device), test["images"], device).argmax(1).numpy()
        entry = {"whole_test": {**classification_metrics(y, pred), **accuracy_by_kind(y, pred, is_adv)}}
        for f in fractions:
            key = f"real{round(100 * (1 - f))}_adv{round(100 * f)}"
            # The same seed per ratio for every model: all models face the same draws.
            try:
                entry[key] = mixed_eval(y, pred, is_adv, n, f, draws, seed)
            except ValueError as e:
                raise SystemExit(f"{args.params}: eval_mixed.n_images={n} does not fit {args.test}: {e}") from e
            for kind in ("acc_real", "acc_adv"):
                s = entry[key][kind]
                bars.append({"ratio": key, "model": name, "kind": kind,
                             "mean": s["mean"], "low": s["low"], "high": s["high"]})
        results[name] = entry
        print(f"{name}: whole test split accuracy {entry['whole_test']['accuracy']:.4f}")
    save_json(args.metrics, {"n_images": n, "draws": draws, "models": results})
    for key in dict.fromkeys(r["ratio"] for r in bars):
        interval_bars([r for r in bars if r["ratio"] == key],
                      f"{key}: {n} images x {draws} draws, 95% intervals", f"{args.plots}/{key}.png")


if __name__ == "__main__":
    main()
