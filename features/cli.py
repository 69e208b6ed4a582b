"""Command line: `python -m features train|embed ...` (see docs/features.md).

Errors the project raises on purpose (bad paths, configs, images) print one line,
`error: ...`, and exit with status 2; tracebacks are kept for real bugs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from data.errors import DeepDPMError
from data.runtime import env_rank
from features.config import check_config, load_features_config

DEFAULT_OUT = "outputs/features"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `python -m features {self.prog.split()[-1]} -h`)\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="config file(s), merged in order (e.g. configs/features_mnist.yaml)")
    parser.add_argument("--data", metavar="DIR|mnist",
                        help="shortcut: `mnist` for the built-in digits, else data.root "
                             "(an ImageFolder directory unless the config says imagenet)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.epochs=5 data.image_size=32")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m features",
                     description="MoCo v2 feature learning and embedding for DeepDPM.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = sub.add_parser("train", help="train MoCo (resumes from OUT/last.pt)")
    _common(train)
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    embed = sub.add_parser("embed", help="write embeddings.npy and friends for a data set")
    embed.add_argument("--checkpoint", required=True, metavar="CKPT",
                       help="checkpoint.pt from `train`, or `none` for an untrained encoder")
    _common(embed)
    return parser


def _config(args: argparse.Namespace) -> DictConfig:
    cfg = load_features_config(args.config, args.overrides)
    if args.data:
        if args.data == "mnist":
            cfg.data.source = "mnist"
        else:
            cfg.data.root = args.data
            if cfg.data.source == "mnist":
                cfg.data.source = "imagefolder"
        check_config(cfg)
    return cfg


def run(args: argparse.Namespace) -> Path:
    from features.embed import embed_dataset
    from features.train import train_moco

    cfg = _config(args)
    out = Path(args.out)
    if args.command == "train":
        return train_moco(cfg, out, progress=not args.quiet)
    checkpoint = None if args.checkpoint.lower() == "none" else Path(args.checkpoint)
    return embed_dataset(checkpoint, cfg, out)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (already printed) and --help
        return int(exc.code or 0)
    try:
        result = run(args)
    except DeepDPMError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if env_rank() == 0:  # under torchrun only rank 0 writes, so only it reports
        print(result)
    return 0
