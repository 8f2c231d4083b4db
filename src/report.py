"""Stage report: reports/results.md, our Tables 1 to 5 beside the paper's, and reports/goals.json,
the scale's goals (params `report.goals`) checked against the measured figures."""
from __future__ import annotations

from pathlib import Path

import yaml

from advhybrid.evaluation.goals import GOALS, check_goals
from advhybrid.evaluation.records import RECORD_PATHS, load_records
from advhybrid.evaluation.report import render
from advhybrid.io import file_digest, save_json, save_text
from advhybrid.params import ParamsError, load_section, stage_parser

HYBRID_SPLITS = ("train", "val", "test")  # the files of --data the report fingerprints


def command(params: dict) -> str:
    """The `dvc exp run` that composes these params (the source override included: without it
    the command would read the official archive, not the images these figures came from)."""
    cmd = f"dvc exp run -S scale={params.get('scale_info', {}).get('name', 'reference')}"
    source = params.get("data", {}).get("source", "official")
    return cmd if source == "official" else f"{cmd} -S data.source={source}"


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, paths={
        "data": "the Hybrid split folder, whose files the report fingerprints", "out": "the report (markdown)",
        "goals_out": "the goals record (JSON)", **RECORD_PATHS})
    args = ap.parse_args(argv)
    goal_params = load_section("report", args.params)["goals"]
    unknown = sorted(set(goal_params) - set(GOALS))
    if unknown:  # before any metrics are read: a typo fails at once, and a KeyError later is the metrics'
        raise ParamsError(f"{args.params}: 'report.goals' has unknown goals {unknown}; known: {', '.join(GOALS)}")
    # The report is the one stage that reads every params section: it prints them all.
    params = yaml.safe_load(Path(args.params).read_text())
    m = load_records(vars(args), params["train"]["models"], params["seeds"]["model"], params["seeds"]["extra"])
    goals = check_goals(m, {k: goal_params.typed(k, float) for k in goal_params})
    save_json(args.goals_out, goals)
    digests = {p: file_digest(p, "md5") for p in (f"{args.data}/{s}.npz" for s in HYBRID_SPLITS)}
    save_text(args.out, render(m, params, digests, command(params), goals))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
