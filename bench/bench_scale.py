"""How DeepDPM scales: seconds per epoch, peak memory, K and NMI over N and true K (run by hand).

    .venv/bin/python bench/bench_scale.py                       # the grid, 20 min cap per run
    .venv/bin/python bench/bench_scale.py --n 10000 100000 --k 50 --epochs 30

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


def child(spec: dict) -> dict:
    """One fit, in this process: time per epoch (median after the first), peak RSS."""
    import torch

    from clustering import DeepDPM

    torch.manual_seed(0)
    x, y = mixture(spec["n"], spec["k"], spec["dim"], spec["seed"])
    deadline = time.perf_counter() + spec["max_seconds"]
    stamps: list[float] = []
    ks: list[int] = []  # the model's K per epoch: what the cost depends on

    def on_epoch(record: dict) -> None:
        stamps.append(time.perf_counter())
        ks.append(int(record["k"]))
        if time.perf_counter() > deadline:
            raise TimeoutError

    params = {"init_k": spec["init_k"], "max_epochs": spec["epochs"], "seed": spec["seed"],
              "tol": None, "device": spec["device"]}
    model = DeepDPM(**params)
    t0 = time.perf_counter()
    finished = True
    try:
        model.fit(x, y, on_epoch=on_epoch)
    except TimeoutError:
        finished = False
    per_epoch = np.diff(stamps)
    out = {**spec, "finished": finished, "epochs_run": len(stamps),
           "wall_s": time.perf_counter() - t0,
           "s_per_epoch": float(np.median(per_epoch)) if len(per_epoch) else float("nan"),
           "model_k": float(np.mean(ks)) if ks else float("nan"),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if finished:
        out.update(k_found=int(model.n_clusters_), nmi=float(model.metrics_["nmi"]))
    return out


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x (the growth exponent)."""
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def table(rows: list[dict]) -> str:
    lines = ["| N | D | true K | init_k | epochs | model K (mean) | s / epoch | peak RSS MB | "
             "K found | NMI |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        found = (f"{r['k_found']} | {r['nmi']:.3f}" if "nmi" in r else "- | -")
        lines.append(f"| {r['n']:,} | {r['dim']} | {r['k']} | {r['init_k']} | "
                     f"{r['epochs_run']}{'' if r['finished'] else ' (capped)'} | "
                     f"{r['model_k']:.0f} | {r['s_per_epoch']:.3f} | "
                     f"{r['peak_rss_mb']:.0f} | {found} |")
    ks = sorted({r["k"] for r in rows})
    ns = sorted({r["n"] for r in rows})
    for k in ks:
        sel = sorted((r["n"], r["s_per_epoch"]) for r in rows if r["k"] == k)
        lines.append(f"\ngrowth exponent of s/epoch in N at K = {k}: "
                     f"{slope(*zip(*sel, strict=True)) if len(sel) > 1 else float('nan'):.2f}")
    for n in ns:  # against the model's K during the timed epochs, not the true K
        sel = sorted((r["model_k"], r["s_per_epoch"]) for r in rows if r["n"] == n)
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
    p.add_argument("--out", default="outputs/bench_scale/scale.md")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.n:
        for k in args.k:
            spec = {"n": n, "k": k, "dim": args.dim, "seed": args.seed, "epochs": args.epochs,
                    "max_seconds": args.max_seconds, "device": args.device,
                    "init_k": 200 if n >= 100_000 else min(k, 50)}
            run = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                                 capture_output=True, text=True, cwd=ROOT)
            if run.returncode != 0:
                print(f"N={n} K={k}: failed\n{run.stderr[-2000:]}", file=sys.stderr)
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
