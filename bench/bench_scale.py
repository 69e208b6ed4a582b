"""How DeepDPM scales: seconds per epoch, peak memory, K and NMI over N and true K (run by hand).

    .venv/bin/python bench/bench_scale.py                       # the grid, 20 min cap per run
    .venv/bin/python bench/bench_scale.py --n 10000 100000 --k 50 --epochs 30
    .venv/bin/python bench/bench_scale.py --n 100000 --k 10 --dim 16 --procs 1 2 --full \
        --init-k 1 --shape blobs

`--procs 1 2` runs each fit in one process and sharded over 2 (torchrun, Gloo on CPU, NCCL
on GPUs); `--full` lets fits run to convergence (every default) instead of `--epochs`.

Data: a mixture like real features (D = 128 by default): cluster sizes falling
geometrically (largest / smallest = 10), each cluster spread along a few random directions
(low rank) plus small isotropic noise, rows L2-normalised. Every run is its own subprocess
(its peak RSS is its own) and stops after `--epochs` epochs or `--max-seconds`. The growth
exponent of time per epoch in N (at fixed K) and in K (at fixed N) is the slope of
log(seconds per epoch) against log N or log K. Results: <out>.jsonl and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def mixture(n: int, k: int, dim: int, seed: int = 0, rank: int = 8) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """n points of k low-rank clusters with sizes falling geometrically to 1/10, float32."""
    rng = np.random.default_rng(seed)
    w = 0.1 ** (np.arange(k) / max(k - 1, 1))
    y = rng.choice(k, size=n, p=w / w.sum())
    centres = rng.normal(size=(k, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    bases = rng.normal(size=(k, rank, dim)).astype(np.float32) * (0.35 / np.sqrt(dim))
    for a in range(0, n, step):
        ya = y[a:a + step]
        coef = rng.normal(size=(len(ya), rank)).astype(np.float32)
        part = centres[ya] + np.einsum("nr,nrd->nd", coef, bases[ya])
        part += rng.normal(0, 0.02, part.shape)
        x[a:a + step] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return x, y


def child(spec: dict) -> dict | None:
    """One fit, in this process (or this rank of a torchrun job): time per epoch (median
    after the first), fit time, peak RSS (the largest rank's). Rank 0 returns the row."""
    import torch

    from clustering import DeepDPM
    from clustering.distributed import World, shard_bounds
    from clustering.metrics import evaluate
    from data.runtime import setup_runtime, teardown_runtime

    runtime = setup_runtime(spec["device"], "device")
    world = World.current()
    torch.manual_seed(0)
    x, y = np.load(spec["x"], mmap_mode="r"), np.load(spec["y"])  # read: this rank's rows
    start, stop = shard_bounds(len(x), world.rank, world.size)
    x = np.array(x[start:stop])
    deadline = time.perf_counter() + spec["max_seconds"]
    stamps: list[float] = []
    ks: list[int] = []  # the model's K per epoch: what the cost depends on

    def on_epoch(record: dict) -> None:
        stamps.append(time.perf_counter())
        ks.append(int(record["k"]))
        if time.perf_counter() > deadline:
            raise TimeoutError

    params = {"init_k": spec["init_k"], "seed": spec["seed"], "device": spec["device"]}
    if not spec.get("full"):
        params.update(max_epochs=spec["epochs"], tol=None)
    model = DeepDPM(**params)
    t0 = time.perf_counter()
    finished = True
    try:
        model.fit(x, on_epoch=on_epoch)  # no y_eval: no per-epoch metrics in the timing
    except TimeoutError:
        finished = False
    wall = time.perf_counter() - t0
    per_epoch = np.diff(stamps)
    rss = max(world.gather_object(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    teardown_runtime(runtime)
    if not world.is_main:
        return None
    out = {**spec, "procs": world.size, "finished": finished, "epochs_run": len(stamps),
           "wall_s": wall,
           "s_per_epoch": float(np.median(per_epoch)) if len(per_epoch) else float("nan"),
           "model_k": float(np.mean(ks)) if ks else float("nan"), "peak_rss_mb": rss}
    if finished:
        out.update(k_found=int(model.n_clusters_), nmi=float(evaluate(y, model.labels_)["nmi"]))
    return out


def blobs(n: int, k: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n points of k equal-weight Gaussians with random full covariances (means N(0, 16 I),
    covariance A A^T / D, A ~ N(0, 1)): the easy case, where K is found in a few moves."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 4, (k, dim))
    y = rng.integers(0, k, n)
    mix = rng.normal(0, 1, (k, dim, dim)) / np.sqrt(dim)
    x = means[y] + np.einsum("nij,nj->ni", mix[y], rng.normal(0, 1, (n, dim)))
    return x.astype(np.float32), y


def data_files(folder: Path, n: int, k: int, dim: int, seed: int,
               shape: str = "features") -> dict[str, str]:
    """The data set written once as .npy files, so that each rank memory-maps its rows."""
    stem = folder / f"{'mixture' if shape == 'features' else shape}_n{n}_k{k}_d{dim}_s{seed}"
    paths = {"x": f"{stem}_x.npy", "y": f"{stem}_y.npy"}
    if not Path(paths["y"]).is_file():
        x, y = (mixture if shape == "features" else blobs)(n, k, dim, seed)
        np.save(paths["x"], x)
        np.save(paths["y"], y)
    return paths


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x (the growth exponent)."""
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def table(rows: list[dict]) -> str:
    lines = ["| N | D | true K | init_k | processes | epochs | model K (mean) | s / epoch | "
             "fit s | peak RSS MB (per process) | K found | NMI |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        found = (f"{r['k_found']} | {r['nmi']:.3f}" if "nmi" in r else "- | -")
        lines.append(f"| {r['n']:,} | {r['dim']} | {r['k']} | {r['init_k']} | "
                     f"{r.get('procs', 1)} | "
                     f"{r['epochs_run']}{'' if r['finished'] else ' (capped)'} | "
                     f"{r['model_k']:.0f} | {r['s_per_epoch']:.3f} | {r['wall_s']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} | {found} |")
    for one in (r for r in rows if r.get("procs", 1) == 1):
        for many in (r for r in rows if r.get("procs", 1) > 1 and r["n"] == one["n"]
                     and r["k"] == one["k"]):
            lines.append(f"\nN = {one['n']:,}, K = {one['k']}: {many['procs']} processes take "
                         f"{many['wall_s'] / one['wall_s']:.2f}x the fit time of one, "
                         f"{many['s_per_epoch'] / one['s_per_epoch']:.2f}x per epoch")
    single = [r for r in rows if r.get("procs", 1) == 1]
    ks = sorted({r["k"] for r in single})
    ns = sorted({r["n"] for r in single})
    for k in ks:
        sel = sorted((r["n"], r["s_per_epoch"]) for r in single if r["k"] == k)
        lines.append(f"\ngrowth exponent of s/epoch in N at K = {k}: "
                     f"{slope(*zip(*sel, strict=True)) if len(sel) > 1 else float('nan'):.2f}")
    for n in ns:  # against the model's K during the timed epochs, not the true K
        sel = sorted((r["model_k"], r["s_per_epoch"]) for r in single if r["n"] == n)
        lines.append(f"growth exponent of s/epoch in the model's K at N = {n:,}: "
                     f"{slope(*zip(*sel, strict=True)) if len(sel) > 1 else float('nan'):.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--k", type=int, nargs="+", default=[50, 200, 1000])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--max-seconds", type=float, default=1200)
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--procs", type=int, nargs="+", default=[1],
                   help="processes per fit (more than 1: torchrun --nproc_per_node)")
    p.add_argument("--init-k", type=int, help="default: 200 from N = 100k, else min(K, 50)")
    p.add_argument("--shape", choices=("features", "blobs"), default="features",
                   help="features: low-rank, L2-normalised, unequal sizes (default); blobs: "
                        "well-separated Gaussians")
    p.add_argument("--full", action="store_true",
                   help="fit with every default (convergence stop) instead of --epochs")
    p.add_argument("--out", default="outputs/bench_scale/scale.md")
    args = p.parse_args(argv)
    if args.child:
        row = child(json.loads(args.child))
        if row is not None:
            print(json.dumps(row))
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, k, procs in ((n, k, p) for n in args.n for k in args.k for p in args.procs):
        init_k = args.init_k or (200 if n >= 100_000 else min(k, 50))
        spec = {"n": n, "k": k, "dim": args.dim, "seed": args.seed, "epochs": args.epochs,
                "max_seconds": args.max_seconds, "device": args.device, "init_k": init_k,
                "full": args.full,
                **data_files(out.parent, n, k, args.dim, args.seed, args.shape)}
        launcher = [sys.executable]
        if procs > 1:
            launcher += ["-m", "torch.distributed.run", "--standalone",
                         f"--nproc_per_node={procs}"]
        run = subprocess.run([*launcher, __file__, "--child", json.dumps(spec)],
                             capture_output=True, text=True, cwd=ROOT)
        if run.returncode != 0:
            print(f"N={n} K={k} procs={procs}: failed\n{run.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(run.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(out.with_suffix(".jsonl"), "a") as fh:
            fh.write(json.dumps(row) + "\n")
    out.write_text(table(rows) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
