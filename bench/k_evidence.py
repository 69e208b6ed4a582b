"""Which K does the DP-NIW posterior itself prefer, under each prior? (run by hand)

    .venv/bin/python bench/k_evidence.py [--sets outputs/dev_sets] [--only NAME ...]

Separates the two ways K inference can fail: if the log joint p(partition, X) of the
true partition (or of GMM partitions near the true K) is not the highest, the *prior*
is wrong and no search can help; if it is, but DeepDPM ends elsewhere, the *search* is.
For every development set (bench/dev_sets.py) it scores the true labels and the
partitions of scikit-learn's GaussianMixture at K = K_true/2 ... 2 K_true, and the truth
with its closest pairs merged or some clusters halved (`perturbed_truths`), under:
  fixed      Psi = 0.005 x mean variance x I, nu = D + 2 (our old default)
  reference  rows L2-normalised, Psi = 0.005 I (the authors' defaults)
  eb         Psi = s x mean variance x I, s the type-II ML (empirical Bayes) scale
             of the partition being scored (`fit_psi_scale`)
  total<c>   Psi = c x covariance of X (total1 is DeepDPM's default, `data_cov`)
and prints, per prior, the K of the best-scoring partition and the truth's rank.

    .venv/bin/python bench/k_evidence.py --only moco --fixed-k 4 5 6 7 8 10 12 14

`--fixed-k` asks the same question where GMM partitions are too slow (5,000 x 128): for
each K it fits DeepDPM with every default but the moves off (k-means++ start at K, EM to
its fixed point under the default prior, 60 epochs) and prints the final log joint and
scores: the best of these K is where the default model's posterior points.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clustering.moves import log_joint  # noqa: E402
from clustering.niw import NIWPrior, Stats, grouped_stats, posterior_scale  # noqa: E402

ALPHA = 10.0


def fit_psi_scale(stats: Stats, prior: NIWPrior, iters: int = 80) -> torch.Tensor:
    """Type-II maximum-likelihood scale s of Psi = s * prior.psi for the given groups.

    Maximises sum_k log p(X_k | Psi = s P) over s > 0 (P = prior.psi is the shape, m0,
    nu, kappa fixed). With lambda_kj the eigenvalues of P^-1/2 B_k P^-1/2, where B_k =
    Psi_n,k - Psi is the scatter plus the mean-shrinkage term, the objective is
        f(s) = sum_k [ (nu D / 2) log s - ((nu + n_k) / 2) sum_j log(s + lambda_kj) ]
    and df/dlog s = sum_k [nu D / 2 - ((nu + n_k) / 2) sum_j s / (s + lambda_kj)] falls
    monotonically from K nu D / 2 > 0 to -D N / 2 < 0: one root, found by bisection on
    log s. For large groups s ~ nu x (harmonic mean of the within-group variances along
    P), so the prior's scale is the clusters' own scale, whatever the data's units.
    Empty groups are ignored. Returns a 0-D float64 tensor.
    """
    keep = stats.n > 0.5
    stats = stats[keep]
    zero = NIWPrior(prior.m0, torch.zeros_like(prior.psi), prior.nu, prior.kappa)
    _, b = posterior_scale(stats, zero)
    chol = torch.linalg.cholesky(prior.psi)
    eye = torch.eye(prior.dim, dtype=b.dtype, device=b.device)
    inv = torch.linalg.solve_triangular(chol, eye, upper=False)
    lam = torch.linalg.eigvalsh(inv @ b @ inv.T).clamp_min(0)  # (K, D)
    nu, dim = prior.nu, prior.dim
    top = lam.max().clamp_min(1e-300)
    lo, hi = torch.log(top) - 60.0, torch.log(top) + 5.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        s = torch.exp(mid)
        grad = (0.5 * nu * dim * lam.shape[0]
                - 0.5 * ((nu + stats.n) * (s / (s + lam)).sum(1)).sum())
        lo, hi = torch.where(grad > 0, mid, lo), torch.where(grad > 0, hi, mid)
    return torch.exp(0.5 * (lo + hi))


def prior_for(x: torch.Tensor, kind: str, labels: torch.Tensor, k: int) -> NIWPrior:
    dim = x.shape[1]
    eye = torch.eye(dim, dtype=torch.float64)
    m0 = torch.zeros(dim, dtype=torch.float64)
    if kind == "fixed":
        return NIWPrior(m0, 0.005 * x.double().var(0).mean() * eye, dim + 2.0, 1e-4)
    if kind == "reference":
        return NIWPrior(m0, 0.005 * eye, dim + 2.0, 1e-4)
    if kind.startswith("total"):  # total<c>: Psi = c x total covariance
        return NIWPrior(m0, float(kind[5:]) * torch.cov(x.double().T), dim + 2.0, 1e-4)
    base = NIWPrior(m0, x.double().var(0).mean() * eye, dim + 2.0, 1e-4)
    s = fit_psi_scale(grouped_stats(x, labels, k), base)
    return NIWPrior(m0, s * base.psi, dim + 2.0, 1e-4)


def score(x: np.ndarray, labels: np.ndarray, kind: str) -> float:
    xt = torch.as_tensor(x, dtype=torch.float64)
    if kind == "reference":
        xt = torch.nn.functional.normalize(xt, dim=1)
    xt = xt - xt.mean(0)
    lab = torch.as_tensor(np.unique(labels, return_inverse=True)[1])
    k = int(lab.max()) + 1
    prior = prior_for(xt, kind, lab, k)
    return float(log_joint(grouped_stats(xt, lab, k), prior, ALPHA))


def partitions(x: np.ndarray, k_true: int, seeds: int, cache: Path) -> dict[int, list[np.ndarray]]:
    from sklearn.mixture import GaussianMixture

    if cache.is_file():
        saved = np.load(cache)
        out: dict[int, list[np.ndarray]] = {}
        for key in saved.files:
            out.setdefault(int(key.split("_")[0]), []).append(saved[key])
        return out

    ks = sorted({max(1, int(round(k_true * f))) for f in
                 (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5, 1.7, 2.0)}
                | {k_true - 1, k_true + 1, k_true + 2})
    cov = "full" if x.shape[1] <= 32 else "diag"
    out = {}
    for k in ks:
        out[k] = [GaussianMixture(k, covariance_type=cov, random_state=s, reg_covar=1e-5)
                  .fit(x).predict(x) for s in range(seeds)]
    cache.parent.mkdir(exist_ok=True)
    np.savez(cache, **{f"{k}_{i}": lab for k, labs in out.items() for i, lab in enumerate(labs)})
    return out


def perturbed_truths(x: np.ndarray, y: np.ndarray) -> dict[int, list[np.ndarray]]:
    """The true partition with its m closest cluster pairs merged, or m clusters halved
    along their principal axis (m up to 20 % of K): how the posterior ranks K near truth."""
    classes = np.unique(y)
    k = len(classes)
    y = np.searchsorted(classes, y)
    means = np.stack([x[y == c].mean(0) for c in range(k)])
    d = ((means[:, None] - means[None]) ** 2).sum(-1) + np.eye(k) * 1e300
    order = np.dstack(np.unravel_index(np.argsort(d, axis=None), d.shape))[0]
    out: dict[int, list[np.ndarray]] = {}
    steps = sorted({1, 2, max(1, k // 10), max(1, k // 5)})
    for m in steps:
        merged, used, done = y.copy(), set(), 0
        for i, j in order:
            if done == m:
                break
            if i < j and i not in used and j not in used:
                merged[merged == j] = i
                used |= {i, j}
                done += 1
        out.setdefault(k - m, []).append(merged)
        split = y.copy()
        for c in range(m):
            rows = np.flatnonzero(y == c)
            xc = x[rows] - x[rows].mean(0)
            axis = np.linalg.svd(xc, full_matrices=False)[2][0]
            split[rows[xc @ axis > 0]] = k + c
        out.setdefault(k + m, []).append(split)
    return out


def fixed_k_scan(files: list[Path], ks: list[int]) -> None:
    """Log joint of the default model's EM fixed point at each K (moves off)."""
    from clustering import DeepDPM
    from clustering.metrics import evaluate

    print("| set | K | log joint (default prior) | NMI / ARI / ACC |\n|---|---|---|---|")
    for f in files:
        data = np.load(f)
        for k in ks:
            model = DeepDPM(init_k=k, init_search=False, split=False, merge=False,
                            merge_modes=False, max_epochs=60, tol=None, seed=0).fit(data["x"])
            m = evaluate(data["y"], model.labels_)
            print(f"| {f.stem} | {k} | {model.history_[-1]['log_joint']:.1f} | "
                  f"{m['nmi']:.3f} / {m['ari']:.3f} / {m['acc']:.3f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=Path, default=ROOT / "outputs" / "dev_sets")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--gmm", action=argparse.BooleanOptionalAction, default=True,
                    help="also score GaussianMixture partitions (slow for large K)")
    ap.add_argument("--priors", nargs="*", default=["fixed", "reference", "eb", "total1"])
    ap.add_argument("--fixed-k", type=int, nargs="*",
                    help="score DeepDPM's own EM fixed points at these K instead")
    args = ap.parse_args(argv)
    files = sorted(args.sets.glob("*.npz"))
    if args.only:
        files = [f for f in files if f.stem in args.only]
    if args.fixed_k:
        fixed_k_scan(files, args.fixed_k)
        return
    print("| set | K true | prior | best K (log joint) | truth's log joint - best | K of "
          "partitions above the truth |")
    print("|---|---|---|---|---|---|")
    for f in files:
        data = np.load(f)
        x, y = data["x"].astype(np.float64), data["y"]
        k_true = len(np.unique(y))
        parts = (partitions(x, k_true, args.seeds, f.parent / "partitions" / f.name)
                 if args.gmm else {})
        for kk, labs in perturbed_truths(x, y).items():
            parts.setdefault(kk, []).extend(labs)
        for kind in args.priors:
            truth = score(x, y, kind)
            scored = [(score(x, lab, kind), len(np.unique(lab))) for labs in parts.values()
                      for lab in labs]
            best, best_k = max([*scored, (truth, k_true)])
            above = sorted({k for s, k in scored if s > truth})
            print(f"| {f.stem} | {k_true} | {kind} | {best_k} | {truth - best:+.0f} | "
                  f"{above or '-'} |", flush=True)


if __name__ == "__main__":
    main()
