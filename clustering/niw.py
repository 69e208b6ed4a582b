"""Normal-inverse-Wishart algebra on sufficient statistics, batched over clusters.

Everything that the M-step and the split/merge tests need is a function of per-group
sufficient statistics (count n, sum s, second moment m2). Keeping that seam clean means a
multi-process run only has to all-reduce three tensors. Small K x D x D work is float64;
the N-sized passes stay float32 on centred data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class NIWPrior:
    """Weak NIW prior: mean m0, scale matrix psi, degrees of freedom nu, strength kappa."""

    m0: Tensor  # (D,) float64
    psi: Tensor  # (D, D) float64
    nu: float
    kappa: float

    @property
    def dim(self) -> int:
        return self.m0.shape[0]


@dataclass
class Stats:
    """Sufficient statistics of G (possibly soft) groups: n (G,), s (G, D), m2 (G, D, D)."""

    n: Tensor
    s: Tensor
    m2: Tensor

    def __add__(self, other: Stats) -> Stats:
        return Stats(self.n + other.n, self.s + other.s, self.m2 + other.m2)

    def __getitem__(self, index: Tensor | slice) -> Stats:
        return Stats(self.n[index], self.s[index], self.m2[index])

    def pairs(self) -> Stats:
        """Sum groups 2k and 2k+1 (sub-clusters -> their parent cluster)."""
        d = self.s.shape[1]
        return Stats(self.n.view(-1, 2).sum(1), self.s.view(-1, 2, d).sum(1),
                     self.m2.view(-1, 2, d, d).sum(1))


def _chunk_rows(dim: int, budget: int = 1 << 22) -> int:
    return max(1, budget // max(1, dim * dim))


def weighted_stats(x: Tensor, weights: Tensor) -> Stats:
    """Stats of G soft groups from a dense N x G weight matrix (one GEMM per chunk)."""
    n_rows, dim = x.shape
    g = weights.shape[1]
    m2 = torch.zeros(g, dim * dim, dtype=torch.float64, device=x.device)
    step = _chunk_rows(dim)
    for a in range(0, n_rows, step):
        xc, wc = x[a:a + step], weights[a:a + step]
        outer = (xc[:, :, None] * xc[:, None, :]).reshape(len(xc), dim * dim)
        m2 += (wc.T @ outer).double()
    w64 = weights.double()
    return Stats(w64.sum(0), w64.T @ x.double(), m2.view(g, dim, dim))


def group_sum(values: Tensor, groups: Tensor, n_groups: int,
              weights: Tensor | None = None) -> Tensor:
    """Per-group (weighted) sums of the rows of `values`: (n_groups, F).

    A sparse (G x N) @ dense (N x F) product: O(N F) like index_add_, but index_add_'s
    multi-threaded CPU path is up to 50x slower on 2 cores.
    """
    n = values.shape[0]
    w = torch.ones(n, device=values.device, dtype=values.dtype) if weights is None else weights
    index = torch.stack([groups, torch.arange(n, device=values.device)])
    onehot = torch.sparse_coo_tensor(index, w.to(values.dtype), (n_groups, n),
                                     check_invariants=False)
    return torch.sparse.mm(onehot, values)


def grouped_stats(x: Tensor, groups: Tensor, n_groups: int,
                  weights: Tensor | None = None) -> Stats:
    """Stats of groups given one group index per row (optionally weighted): O(N D^2).

    Each chunk accumulates in x's dtype; chunks are summed in float64.
    """
    n_rows, dim = x.shape
    w = torch.ones(n_rows, device=x.device, dtype=x.dtype) if weights is None else weights
    ns = group_sum(torch.cat([torch.ones_like(w)[:, None], x], 1), groups, n_groups, w)
    m2 = torch.zeros(n_groups, dim * dim, dtype=torch.float64, device=x.device)
    step = _chunk_rows(dim, 1 << 24)
    for a in range(0, n_rows, step):
        xc = x[a:a + step]
        outer = (xc[:, :, None] * xc[:, None, :]).reshape(len(xc), dim * dim)
        m2 += group_sum(outer, groups[a:a + step], n_groups, w[a:a + step]).double()
    ns = ns.double()
    return Stats(ns[:, 0], ns[:, 1:], m2.view(n_groups, dim, dim))


def _mean_and_scatter(stats: Stats) -> tuple[Tensor, Tensor, Tensor]:
    """Sample mean xbar and scatter about it, S = m2 - n xbar xbar^T (0 for empty groups)."""
    n = stats.n.clamp_min(1e-12)
    xbar = stats.s / n[:, None]
    scatter = stats.m2 - stats.n[:, None, None] * xbar[:, :, None] * xbar[:, None, :]
    scatter = 0.5 * (scatter + scatter.transpose(1, 2))
    return stats.n, xbar, scatter


def posterior_scale(stats: Stats, prior: NIWPrior) -> tuple[Tensor, Tensor]:
    """(xbar, Psi_n) of the NIW posterior given hard or soft stats."""
    n, xbar, scatter = _mean_and_scatter(stats)
    dev = xbar - prior.m0
    shrink = prior.kappa * n / (prior.kappa + n)
    psi_n = prior.psi + scatter + shrink[:, None, None] * dev[:, :, None] * dev[:, None, :]
    return xbar, psi_n


def map_params(stats: Stats, prior: NIWPrior) -> tuple[Tensor, Tensor]:
    """MAP mean and covariance of the NIW posterior, batched: (G, D), (G, D, D) float64."""
    xbar, psi_n = posterior_scale(stats, prior)
    n = stats.n
    mean = (n[:, None] * xbar + prior.kappa * prior.m0) / (n + prior.kappa)[:, None]
    cov = psi_n / (prior.nu + n + prior.dim + 2)[:, None, None]
    return mean, cov


def dirichlet_weights(counts: Tensor, concentration: float) -> Tensor:
    """Posterior-mean mixture weights (n_k + a) / (N + K a): smoothing on counts."""
    return (counts + concentration) / (counts.sum() + concentration * counts.shape[0])


def safe_logdet_cholesky(cov: Tensor, rel_jitter: float = 1e-6,
                         tries: int = 8) -> tuple[Tensor, Tensor]:
    """Cholesky factors of a batch of covariances that never fails.

    A scale-aware jitter (rel_jitter * mean eigenvalue) is always added; factors that still
    fail are retried with 10x more jitter, and as a last resort eigenvalues are floored.
    Returns (L, cov_used).
    """
    dim = cov.shape[-1]
    eye = torch.eye(dim, dtype=cov.dtype, device=cov.device)
    scale = torch.diagonal(cov, dim1=-2, dim2=-1).mean(-1).abs().clamp_min(1e-30)
    jitter = rel_jitter * scale
    cov_used = cov + jitter[..., None, None] * eye
    chol, info = torch.linalg.cholesky_ex(cov_used)
    for _ in range(tries):
        bad = info != 0
        if not bool(bad.any()):
            return chol, cov_used
        jitter = torch.where(bad, torch.maximum(jitter * 10, 1e-10 * scale), jitter)
        cov_used = torch.where(bad[..., None, None], cov + jitter[..., None, None] * eye, cov_used)
        chol, info = torch.linalg.cholesky_ex(cov_used)
    bad = info != 0
    if bool(bad.any()):
        evals, evecs = torch.linalg.eigh(cov_used)
        evals = evals.clamp_min(1e-6 * scale[..., None])
        fixed = evecs @ torch.diag_embed(evals) @ evecs.transpose(-1, -2)
        cov_used = torch.where(bad[..., None, None], fixed, cov_used)
        chol = torch.linalg.cholesky(cov_used)
    return chol, cov_used


def log_marginal_likelihood(stats: Stats, prior: NIWPrior) -> Tensor:
    """log p(X_g) under the NIW prior for each group's hard set, from its sufficient stats.

    Textbook form (sample mean of the set, not a supplied centre); an empty group has 0.
    """
    dim = prior.dim
    n = stats.n
    _, psi_n = posterior_scale(stats, prior)
    # PD by construction: jitter only on failure
    chol, _ = safe_logdet_cholesky(psi_n, rel_jitter=0.0)
    logdet_n = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    logdet_0 = torch.linalg.slogdet(prior.psi)[1]
    nu_n = prior.nu + n
    return (-0.5 * n * dim * math.log(math.pi)
            + torch.mvlgamma(nu_n / 2, dim) - torch.mvlgamma(torch.full_like(n, prior.nu / 2), dim)
            + 0.5 * prior.nu * logdet_0 - 0.5 * nu_n * logdet_n
            + 0.5 * dim * (math.log(prior.kappa) - torch.log(prior.kappa + n)))


class GaussianScorer:
    """Log-densities of all K Gaussians for many points, factored once per epoch.

    Mahalanobis terms come from one GEMM per chunk against the stacked inverse Cholesky
    factors (D x K*D) instead of a Python loop building one distribution per cluster.
    """

    def __init__(self, means: Tensor, covs: Tensor, log_weights: Tensor, dtype: torch.dtype):
        k, dim = means.shape
        chol, _ = safe_logdet_cholesky(covs.double())
        eye = torch.eye(dim, dtype=torch.float64, device=means.device).expand(k, dim, dim)
        inv = torch.linalg.solve_triangular(chol, eye, upper=False)  # L^-1, (K, D, D)
        self.k, self.dim = k, dim
        self.proj = inv.permute(2, 0, 1).reshape(dim, k * dim).to(dtype)  # x -> L^-1 x
        self.offset = (inv @ means.double()[:, :, None]).squeeze(-1).to(dtype)  # L^-1 mu
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        self.const = (log_weights.double() - 0.5 * (dim * math.log(2 * math.pi) + logdet)).to(dtype)

    def log_joint(self, x: Tensor) -> Tensor:
        """log pi_k + log N(x_i; mu_k, Sigma_k) for every row and cluster: (N, K)."""
        out = torch.empty(x.shape[0], self.k, dtype=self.const.dtype, device=x.device)
        step = max(1, (1 << 23) // max(1, self.k * self.dim))
        for a in range(0, x.shape[0], step):
            y = (x[a:a + step] @ self.proj).view(-1, self.k, self.dim) - self.offset
            out[a:a + step] = self.const - 0.5 * y.square().sum(-1)
        return out

    def log_responsibilities(self, x: Tensor) -> Tensor:
        """E-step: normalised log r_ik."""
        joint = self.log_joint(x)
        return joint - torch.logsumexp(joint, dim=1, keepdim=True)
