"""Stage check_params: params.yaml against the typed schema, before any other stage runs.

DVC deletes a stage's outputs right before it runs the stage, so a bad value checked by the
stage itself used to cost the outputs it was meant to replace. Every other stage depends on
this one's output, so DVC runs this first and stops here on a bad value: nothing downstream
is touched. The output's content never changes (it marks the order, not a result), so a valid
params change reruns only the stages that read it.
"""
from __future__ import annotations

import sys

from advhybrid.io import save_json
from advhybrid.params import ParamsError, stage_parser
from advhybrid.schema import load_params

MARKER = {"params": "params.yaml", "checked_by": "src/check_params.py (advhybrid.schema)"}


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, paths={"out": "the marker every other stage depends on"})
    args = ap.parse_args(argv)
    try:
        load_params(args.params)
    except ParamsError as e:
        sys.exit(f"check_params: {e}")
    save_json(args.out, MARKER)
    print(f"{args.params}: every section valid")


if __name__ == "__main__":
    main()
