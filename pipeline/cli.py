"""Command line: `python -m pipeline run CONFIG [key=value ...] [--only|--from STAGE] [--force]`.

Errors the user can fix (bad key, missing file) print one `error: ...` line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from data.errors import DeepDPMError
from data.runtime import env_rank

STAGE_NAMES = ("features", "cluster", "alternate", "report")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline",
                                     description="MoCo features -> DeepDPM -> report")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline (finished, unchanged stages are skipped)")
    run.add_argument("config", help="experiment YAML, e.g. configs/demo.yaml "
                                    "(composed over configs/base.yaml)")
    run.add_argument("overrides", nargs="*", metavar="key=value",
                     help="config overrides, e.g. cluster.max_epochs=50")
    group = run.add_mutually_exclusive_group()
    group.add_argument("--only", choices=STAGE_NAMES, help="(re)run just this stage")
    group.add_argument("--from", dest="from_stage", choices=STAGE_NAMES,
                       help="(re)run this stage and every later one")
    run.add_argument("--force", action="store_true", help="rerun every selected stage")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    # key=value may come before or after the options; argparse leaves the later ones over.
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or "=" not in e]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *extra]
    try:
        from pipeline.runner import run_pipeline

        run_pipeline(args.config, args.overrides, only=args.only,
                     from_stage=args.from_stage, force=args.force)
    except DeepDPMError as exc:
        if env_rank() == 0:  # under torchrun every rank fails together; rank 0 says why
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if env_rank() == 0:
            print("interrupted: the unfinished stage has no manifest and will be redone",
                  file=sys.stderr)
        return 130
    return 0
