"""Stage report: reports/results.md, our Tables 1 to 5 beside the paper's, and metrics/goals.json,
the scale's goals (params `report.goals`) checked against the measured figures."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from advhybrid.evaluation.goals import GOALS, check_goals
from advhybrid.evaluation.report import render
from advhybrid.io import file_digest, save_json, save_text
from advhybrid.params import ParamsError, load_section

METRICS = ["targets", "gan", "adversarial", "hybrid", "validation", "eval_mixed"]
DATA = ["data/hybrid/train.npz", "data/hybrid/val.npz", "data/hybrid/test.npz"]


def command(params: dict) -> str:
    """The `dvc exp run` that composes these params (the source override included: without it
    the command would read the official archive, not the images these figures came from)."""
    cmd = f"dvc exp run -S scale={params.get('scale_info', {}).get('name', 'reference')}"
    source = params.get("data", {}).get("source", "official")
    return cmd if source == "official" else f"{cmd} -S data.source={source}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="reports/results.md")
    ap.add_argument("--goals-out", default="metrics/goals.json")
    args = ap.parse_args()
    goal_params = load_section("report", args.params)["goals"]
    unknown = sorted(set(goal_params) - set(GOALS))
    if unknown:  # before any metrics are read: a typo fails at once, and a KeyError later is the metrics'
        raise ParamsError(f"{args.params}: 'report.goals' has unknown goals {unknown}; known: {', '.join(GOALS)}")
    # The report is the one stage that reads every params section: it prints them all.
    params = yaml.safe_load(Path(args.params).read_text())
    m = {k: json.loads(Path(f"metrics/{k}.json").read_text()) for k in METRICS}
    m["train"] = {n: json.loads(Path(f"metrics/train/{n}.json").read_text()) for n in params["train"]["models"]}
    # the robustness study (its section goes first: it answers the paper's question). Under
    # `dvc repro` its files always exist (they are deps); run by hand on a pipeline stopped
    # before the study, the report says so instead of failing.
    if Path("reports/robustness.json").is_file():
        m["robustness"] = json.loads(Path("reports/robustness.json").read_text())
        m["adaptive"] = json.loads(Path("metrics/adaptive.json").read_text())
        seeds = [0, *params["seeds"]["extra"]]
        main_model = params["seeds"]["model"]
        seed0 = {"model": main_model, "seed": 0,
                 "defended": m["train"][main_model],
                 "baseline": json.loads(Path(f"metrics/baseline/{main_model}.json").read_text())}
        m["seeds"] = [seed0] + [json.loads(Path(f"metrics/seeds/s{s}.json").read_text()) for s in seeds[1:]]
    goals = check_goals(m, {k: goal_params.typed(k, float) for k in goal_params})
    save_json(args.goals_out, goals)
    save_text(args.out, render(m, params, {p: file_digest(p, "md5") for p in DATA}, command(params), goals))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
