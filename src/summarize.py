"""Stage summarize: metrics/summary/, the few flat numbers `dvc exp show` and `dvc metrics diff`
compare, folded from every stage's record (evaluation/summary.py says which)."""
from __future__ import annotations


from advhybrid.evaluation.records import RECORD_PATHS, load_records, read_json
from advhybrid.evaluation.summary import summarize
from advhybrid.io import atomic_dir, save_json
from advhybrid.params import load_section, stage_parser


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, paths={
        "goals": "the report's goals record (JSON)", "out": "the summary folder (DVC metrics)", **RECORD_PATHS})
    args = ap.parse_args(argv)
    train, seeds = load_section("train", args.params), load_section("seeds", args.params)
    records = load_records(vars(args), train.names("models"), seeds.typed("model", str), seeds["extra"])
    records["goals"] = read_json(args.goals)
    rows = summarize(records)
    with atomic_dir(args.out) as tmp:  # the whole set or the old one: never a mix of two runs
        for rel, row in rows.items():
            save_json(tmp / f"{rel}.json", row)
    print(f"wrote {len(rows)} files, {sum(map(len, rows.values()))} figures, under {args.out}/")


if __name__ == "__main__":
    main()
