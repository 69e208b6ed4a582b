"""Command line: `python -m clustering fit ...` and `python -m clustering predict ...`.

Bad input ends with one line on stderr and exit status 2, never a deep traceback.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from clustering.config import DeepDPMConfig
from clustering.distributed import World, shard_bounds
from data.config import load_config, to_container
from data.errors import DeepDPMError, InputError
from data.files import load_array, load_labels, save_csv, save_json, save_npy, save_text
from data.folders import atomic_folder, check_folder_target, folder_lock, refuse_foreign
from data.runtime import env_rank, setup_runtime, teardown_runtime

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "clustering.yaml"
FIT_OUTPUTS = ("labels.npy", "model.pt", "history.csv", "config.yaml", "metrics.json")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clustering",
                                     description="DeepDPM clustering of embeddings")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="infer K and cluster an embeddings file")
    fit.add_argument("embeddings", help=".npy, .npz or .pt file holding an N x D array")
    fit.add_argument("overrides", nargs="*", help="config overrides, key=value")
    fit.add_argument("--labels", help="labels for evaluation only (.npy/.pt/.npz/.txt)")
    fit.add_argument("--config", help="YAML config (default: configs/clustering.yaml)")
    fit.add_argument("--key", help="array name inside an .npz or a dict-holding .pt")
    fit.add_argument("--allow-pickle", action="store_true",
                     help="allow unpickling a .pt/.npy holding Python objects (trusted files)")
    fit.add_argument("--out", required=True, help="output directory")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    pred = sub.add_parser("predict", help="assign new embeddings with a fitted model")
    pred.add_argument("model", help="model.pt written by `fit`")
    pred.add_argument("embeddings")
    pred.add_argument("--key")
    pred.add_argument("--allow-pickle", action="store_true")
    pred.add_argument("--out", required=True, help="labels .npy file to write")
    pred.add_argument("--proba", help="also write soft assignments to this .npy file")
    return parser


def _fit(args: argparse.Namespace) -> None:
    """One process, or one rank of `torchrun --nproc_per_node=G -m clustering fit ...`:
    then each rank fits its shard of the rows and rank 0 alone locks and writes `out`."""
    out = Path(args.out)
    config_file = Path(args.config) if args.config else DEFAULT_CONFIG
    files = [config_file] if (args.config or config_file.is_file()) else []
    cfg = load_config(DeepDPMConfig, files, args.overrides)
    runtime = setup_runtime(cfg.device, "device")  # NCCL on GPUs, Gloo on CPU
    try:
        world = World.current()
        with ExitStack() as stack:
            error = None
            if world.is_main:
                try:  # before any work: a bad --out must not cost a fit
                    check_folder_target(out, "--out")
                    stack.enter_context(folder_lock(out, "--out"))
                    refuse_foreign(out, FIT_OUTPUTS, "--out")
                except DeepDPMError as exc:
                    error = exc
            world.agree(error)
            _fit_into(args, out, cfg, world)
    finally:
        teardown_runtime(runtime)


def _load_shard(args: argparse.Namespace,
                world: World) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """This rank's rows of the embeddings (a memory-mapped .npy is read only there) and of
    the labels, with the shard's [start, stop)."""
    x = load_array(args.embeddings, key=args.key, allow_pickle=args.allow_pickle,
                   mmap=world.active)
    y = load_labels(args.labels, allow_pickle=args.allow_pickle) if args.labels else None
    if y is not None and x.ndim >= 1 and len(y) != len(x):
        raise InputError(f"{args.labels}: {len(y)} labels but {args.embeddings} has {len(x)} rows")
    if not world.active or x.ndim < 1:
        return x, y, (0, len(x) if x.ndim >= 1 else 0)
    start, stop = shard_bounds(len(x), world.rank, world.size)
    return np.array(x[start:stop]), None if y is None else y[start:stop], (start, stop)


def _fit_into(args: argparse.Namespace, out: Path, cfg: Any, world: World) -> None:
    """Fit, then (rank 0) write every output into a temporary sibling that replaces `out`
    whole."""
    from clustering.model import DeepDPM

    params = to_container(cfg)
    if not args.quiet:
        params["verbose"] = True
    error, x, y, shard = None, None, None, (0, 0)
    try:
        x, y, shard = _load_shard(args, world)
    except DeepDPMError as exc:
        error = exc
    world.agree(error)
    model = DeepDPM(**params).fit(x, y)
    metrics = {"k": int(model.n_clusters_), "k_used": int(len(np.unique(model.labels_))),
               "world_size": world.size, "shards": [list(s) for s in world.gather_object(shard)]}
    if y is not None:
        metrics.update({k: v for k, v in model.metrics_.items() if k != "k"})
    if not world.is_main:
        return
    with atomic_folder(out, FIT_OUTPUTS, "--out") as tmp:
        save_npy(tmp / "labels.npy", model.labels_)
        model.save(tmp / "model.pt")
        save_csv(tmp / "history.csv", model.history_)
        save_text(tmp / "config.yaml", OmegaConf.to_yaml(cfg))
        save_json(tmp / "metrics.json", metrics)
    line = f"K = {model.n_clusters_}"
    if y is not None:
        line += "  " + "  ".join(f"{k.upper()} = {metrics[k]:.4f}" for k in ("nmi", "ari", "acc"))
    print(line)
    print(f"wrote {out}/labels.npy, model.pt, history.csv, metrics.json")


def _output_file(value: str | None, flag: str) -> None:
    """An output file path: not a folder, in a folder we can write (checked before work)."""
    if value is None:
        return
    path = Path(value)
    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder; give the .npy file to write")
    check_folder_target(path.parent, flag)


def _predict(args: argparse.Namespace) -> None:
    from clustering.model import DeepDPM

    _output_file(args.out, "--out")
    _output_file(args.proba, "--proba")
    model = DeepDPM.load(args.model)
    x = load_array(args.embeddings, key=args.key, allow_pickle=args.allow_pickle)
    save_npy(args.out, model.predict(x))
    if args.proba:
        save_npy(args.proba, model.predict_proba(x))
    print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and args.command != "fit"):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if args.command == "fit":
        args.overrides = [*args.overrides, *extra]
    try:
        if args.command == "fit":
            _fit(args)
        else:
            _predict(args)
    except DeepDPMError as exc:
        if env_rank() == 0:  # every rank fails together; one says why
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if env_rank() == 0:
            print("interrupted: nothing was written under the final names", file=sys.stderr)
        return 130
    return 0
