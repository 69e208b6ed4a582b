"""Benchmark: AE alternation vs DeepDPM directly on the same features (run by hand).

    .venv/bin/python bench/bench_alternation.py [EMBEDDINGS.npy [LABELS.npy]] [options]

Without arguments it uses outputs/bench_features/{embeddings,labels}.npy when present
(MoCo features of the built-in MNIST digits), else PCA-50 of the raw digits
(`data.mnist.load_mnist_digits`). Prints a table of NMI / ARI / ACC / K and time, and
writes it as JSON to `--out`/results.json (the alternation's files go to `--out`/alternation).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clustering import DeepDPM  # noqa: E402
from clustering.alternation import AEAlternation  # noqa: E402
from data.files import load_array, load_labels, save_json  # noqa: E402

DEFAULT_FEATURES = Path("outputs/bench_features")


def pca(x: np.ndarray, dim: int) -> np.ndarray:
    """Top-`dim` principal components (SVD of the centred data)."""
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return (xc @ vt[:dim].T).astype(np.float32)


def load_features(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """Embeddings + labels from the arguments, the features engineer's output, or PCA."""
    if args.synthetic is not None:
        from data.synthetic import entangled

        x, y = entangled(seed=args.synthetic)
        return x, y, f"the entangled mixture of data/synthetic.py (seed {args.synthetic})"
    if args.embeddings:
        x = load_array(args.embeddings).astype(np.float32)
        y = load_labels(args.labels) if args.labels else None
        return x, y, str(args.embeddings)
    emb, lab = DEFAULT_FEATURES / "embeddings.npy", DEFAULT_FEATURES / "labels.npy"
    if emb.is_file() and lab.is_file():
        return load_array(emb).astype(np.float32), load_labels(lab), str(emb)
    from data.mnist import load_mnist_digits

    images, labels = load_mnist_digits(seed=0)
    x = pca(images.reshape(len(images), -1).astype(np.float32) / 255.0, args.pca_dim)
    return x, labels, f"PCA-{args.pca_dim} of the built-in MNIST digits"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("embeddings", nargs="?")
    p.add_argument("labels", nargs="?")
    p.add_argument("--out", default="outputs/bench_alternation")
    p.add_argument("--pca-dim", type=int, default=50)
    p.add_argument("--synthetic", type=int, metavar="SEED",
                   help="use the tests' entangled 30-D mixture with the tests' settings")
    p.add_argument("--hidden", type=int, nargs="+", default=[500, 500, 2000])
    p.add_argument("--latent", type=int, default=10)
    p.add_argument("--pretrain-epochs", type=int, default=50)
    p.add_argument("--ae-epochs", type=int, default=20)
    p.add_argument("--alternations", type=int, default=3)
    p.add_argument("--lambda", dest="lambda_", type=float, default=0.05)
    p.add_argument("--beta", type=float, default=0.01)
    p.add_argument("--assignment", default="hard", choices=["hard", "soft"])
    p.add_argument("--init-k", type=int, default=3)
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument("--prior-sigma-choice", default="data_var")
    p.add_argument("--prior-sigma-scale", type=float, default=0.005)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--fresh", action="store_true", help="delete --out first (no resume)")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    x, y, source = load_features(args)
    if args.synthetic is not None:  # the settings of test_alternation_beats_deepdpm_on_raw_input
        from data.synthetic import SHORT_CLUSTER, SMALL_AE

        args.hidden, args.latent = SMALL_AE["hidden_dims"], SMALL_AE["latent_dim"]
        args.pretrain_epochs, args.ae_epochs, args.alternations = 60, 20, 3
        args.lambda_, args.beta = SMALL_AE["lambda_"], SMALL_AE["beta"]
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    cluster = {"init_k": args.init_k, "max_epochs": args.max_epochs, "seed": args.seed,
               "prior_sigma_choice": args.prior_sigma_choice,
               "prior_sigma_scale": args.prior_sigma_scale}
    if args.synthetic is not None:
        cluster = dict(SHORT_CLUSTER)
    alt_cfg = {"hidden_dims": list(args.hidden), "latent_dim": args.latent,
               "pretrain_epochs": args.pretrain_epochs, "ae_epochs": args.ae_epochs,
               "n_alternations": args.alternations, "lambda_": args.lambda_, "beta": args.beta,
               "assignment": args.assignment, "seed": args.seed}
    print(f"features: {source}  {x.shape[0]} x {x.shape[1]}  "
          f"classes: {len(np.unique(y)) if y is not None else '?'}", flush=True)

    t0 = time.perf_counter()
    direct = DeepDPM(**cluster).fit(x, y)
    t_direct = time.perf_counter() - t0
    t0 = time.perf_counter()
    alt = AEAlternation(alt_cfg, cluster).fit(x, y, out_dir=out / "alternation")
    t_alt = time.perf_counter() - t0

    rows = [{"method": "DeepDPM on features", "k": direct.n_clusters_,
             **(direct.metrics_ if y is not None else {}), "seconds": round(t_direct, 1)}]
    for h in alt.history_:
        rows.append({"method": f"AE alternation t={h['alternation']}", "k": h["k"],
                     **{m: h[m] for m in ("nmi", "ari", "acc") if m in h},
                     "seconds": round(h["ae_seconds"] + h["cluster_seconds"], 1)})
    print(f"{'method':28s} {'K':>4s} {'NMI':>6s} {'ARI':>6s} {'ACC':>6s} {'sec':>7s}")
    for r in rows:
        print(f"{r['method']:28s} {r['k']:4d} {r.get('nmi', float('nan')):6.3f} "
              f"{r.get('ari', float('nan')):6.3f} {r.get('acc', float('nan')):6.3f} "
              f"{r['seconds']:7.1f}")
    print(f"alternation stage total (pretraining included): {t_alt:.1f} s")
    save_json(out / "results.json", {"source": source, "shape": list(x.shape),
                                     "alternation_total_seconds": round(t_alt, 1),
                                     "cluster": cluster, "alternation": alt_cfg, "rows": rows,
                                     "argv": sys.argv[1:]})
    print(json.dumps({"results": str(out / "results.json")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
