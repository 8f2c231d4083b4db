"""Print docs/results.md's tables from the committed metrics/ (so no figure there is typed in).

    python tools/results_tables.py            # from the repo root, after a pipeline run
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from advhybrid.evaluation.goals import COUNT_GOALS
from advhybrid.params import Section


def load(name: str) -> dict:
    return json.loads(Path(f"metrics/{name}.json").read_text())


def main() -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    t, g, a, h = load("targets"), load("gan"), load("adversarial"), load("hybrid")
    print(f"Scale `{params['scale_info']['name']}` ({params['scale_info']['description']}).\n")
    print("| target | width | params | clean test acc | GAN untargeted @k=1 | GAN targeted @k=1 | cos G(x,t) | k-search success "
          "| targeted share | mean k | mean Linf (/255) | mean SSIM | AEs kept / attacked |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in t:
        print(f"| {n} | {Section(params['targets'], 'targets', 'params.yaml').per_model('width', n, float):g} | {t[n]['params']:,} | {100 * t[n]['test_acc']:.2f}% | {100 * g[n]['untargeted_success']:.1f}% "
              f"| {100 * g[n]['targeted_success']:.1f}% | {g[n].get('perturbation_cosine') or float('nan'):.2f} "
              f"| {100 * a[n]['success_rate']:.1f}% "
              f"| {100 * a[n]['targeted_rate']:.1f}% | {a[n]['mean_k']:.3f} | {255 * a[n]['mean_linf']:.2f} "
              f"| {a[n]['mean_ssim']:.4f} | {a[n]['n_success']:,} / {a[n]['n_attacked']:,} |")
    print("\nHybrid CIFAR-10 (metrics/hybrid.json): "
          + ", ".join(f"{s} {v['real']:,} real + {v['adversarial']:,} AEs" for s, v in h["splits"].items())
          + f"; {h['pool']['adversarial_images']:,} AEs from {h['pool']['sources']:,} source images available.")
    print("\n| defended model | width | params | epochs | loss | train acc | val acc | test acc | precision | recall | test real | test AEs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in params["train"]["models"]:
        m = json.loads(Path(f"metrics/train/{n}.json").read_text())
        print(f"| {n} | {Section(params['train'], 'train', 'params.yaml').per_model('width', n, float):g} | {m['params']:,} | {m['epochs']} | {m['loss']:.4f} | {100 * m['train_acc']:.2f}% | {100 * m['val_acc']:.2f}% "
              f"| {100 * m['test_acc']:.2f}% | {100 * m['precision']:.2f}% | {100 * m['recall']:.2f}% "
              f"| {100 * m['test_acc_real']:.2f}% | {100 * m['test_acc_adv']:.2f}% |")
    if Path("reports/goals.json").is_file():
        print("\nGoals (reports/goals.json; each must hold for the worst model):\n")
        print("| goal | target | worst (model) | status |")
        print("|---|---|---|---|")
        for name, goal in json.loads(Path("reports/goals.json").read_text()).items():
            count = name in COUNT_GOALS
            fmt = (lambda v: f"{v:,.0f}") if count else (lambda v: f"{100 * v:.1f}%")  # noqa: E731
            worst = "n/a" if goal["worst"] is None else fmt(goal["worst"])
            target = f"{goal['goal']:,.0f}" if count else f"{100 * goal['goal']:.0f}%"
            print(f"| {name} | ≥ {target} | {worst} ({goal['worst_model']}) | "
                  f"{'met' if goal['met'] else 'missed'} |")
    em = load("eval_mixed")
    print(f"\nMixed draws ({em['n_images']} images, {em['draws']} draws; mean [95% interval]):\n")
    ratios = [k for k in next(iter(em["models"].values())) if k.startswith("real")]
    print("| model | " + " | ".join(f"{r} real | {r} AEs" for r in ratios) + " |")
    print("|---|" + "---|---|" * len(ratios))
    for n, v in em["models"].items():
        cells = []
        for r in ratios:
            for kind in ("acc_real", "acc_adv"):
                s = v[r][kind]
                cells.append(f"{100 * s['mean']:.1f} [{100 * s['low']:.1f}, {100 * s['high']:.1f}]")
        print(f"| {n} | " + " | ".join(cells) + " |")


    if Path("metrics/robustness.json").is_file():
        rob = load("robustness")
        keys = [k for k in next(iter(rob.values())) if k != "checks_failed"]
        print("\nRobustness study (metrics/robustness.json; reports/robustness.json has the intervals):\n")
        print("| model | " + " | ".join(keys) + " | checks failed |")
        print("|---|" + "---|" * (len(keys) + 1))
        for n, v in rob.items():
            print(f"| {n} | " + " | ".join(f"{100 * v[k]:.1f}%" for k in keys) + f" | {v['checks_failed']} |")
    if Path("metrics/adaptive.json").is_file():
        print("\nAdaptive attack (metrics/adaptive.json): the paper's GAN retrained against each model\n")
        print("| model | kind | clean acc (held-out) | k=1 untargeted | k=1 targeted | k-search success "
              "| accuracy under the attack (k search) | GAN steps |")
        print("|---|---|---|---|---|---|---|---|")
        for n, kinds in load("adaptive").items():
            for kind in ("defended", "control"):  # the other keys are their paired comparisons
                v = kinds[kind]
                a = v["acc_k_search"]
                print(f"| {n} | {kind} | {100 * v['clean_accuracy']:.1f}% | {100 * v['k1_untargeted']:.1f}% "
                      f"| {100 * v['k1_targeted']:.1f}% | {100 * v['k_search_success']:.1f}% "
                      f"| {100 * a['acc']:.1f}% [{100 * a['low']:.1f}, {100 * a['high']:.1f}] | {v['gan_steps']:,} |")


if __name__ == "__main__":
    main()
