"""How many image-attacks the chained white-box study runs, against attacking every clean-correct
image afresh at every budget (and AutoAttack on a fixed subset), read from a robustness record.

    python tools/attack_counts.py [reports/robustness.json]

PGD's first restart attacks, per budget, the images still correct at the budget before (chained)
or every clean-correct image (unchained); the counts come from each model's per-budget figures,
so this runs on any record eval_robustness wrote, including one from before the chained sweep.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def counts(details: dict) -> list[dict]:
    budgets = [f"{e:g}" for e in details["settings"]["eps_255"]]
    rows = []
    for key, d in details.items():
        if key == "settings":
            continue
        wb = d["whitebox"]
        n = wb["n"]
        clean = round(wb["clean"]["acc"] * n)
        alive = [round(wb["pgd"][b]["acc"] * n) for b in budgets]
        rows.append({"model": key, "clean": clean, "unchained": clean * len(budgets),
                     "chained": clean + sum(alive[:-1]), "pgd_8_survivors": alive[budgets.index("8")]})
    return rows


def main(argv: list[str] | None = None) -> None:
    path = Path((argv or sys.argv[1:] or ["reports/robustness.json"])[0])
    rows = counts(json.loads(path.read_text()))
    print("| model | clean-correct | PGD image-attacks, unchained | chained | AutoAttack on (PGD 8/255 survivors) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['clean']} | {r['unchained']} | {r['chained']} | {r['pgd_8_survivors']} |")
    un, ch = sum(r["unchained"] for r in rows), sum(r["chained"] for r in rows)
    print(f"| **all** | | {un} | {ch} ({100 * (1 - ch / un):.0f}% fewer) | {sum(r['pgd_8_survivors'] for r in rows)} |")


if __name__ == "__main__":
    main()
