"""Clusters as modes of the fitted mixture: which Gaussian components form one cluster.

A DP mixture of Gaussians models the data's density; it does not know that a curved or
heavy-tailed cluster is one group. Its posterior prefers to cover such a cluster with
several components (bench/k_evidence.py: on half-moon and Student-t clusters every prior
scores the over-split partitions above the true one), so no prior fixes that. What stays
true is the density: components that cover one curved or heavy-tailed group share one
mode of the mixture, components of separate groups do not (Li, Ray and Lindsay, "A
nonparametric statistical approach to clustering via mode identification", JMLR 2007).

Modal EM climbs from each component mean to a mode of
    f(x) = sum_k pi_k N(x; mu_k, Sigma_k)
by the fixed-point step (the EM for the mode, which never decreases f)
    w_k(x) = pi_k N(x; mu_k, Sigma_k) / f(x)
    x <- (sum_k w_k(x) Sigma_k^-1)^-1 sum_k w_k(x) Sigma_k^-1 mu_k,
all K starting points at once. Components whose climbs end at the same point are one
cluster. Nothing here is tuned per data set: the only tolerance is relative to the
components' own spread.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from clustering.niw import safe_logdet_cholesky

NEIGHBOURS = 32  # components that enter each climb: the nearest means (and itself)


def neighbour_index(means: Tensor) -> Tensor:
    """(K, m) indices: each component itself, then its m - 1 nearest means (FAISS kNN, as
    the merge proposals), m = min(K, NEIGHBOURS)."""
    from clustering.moves import nearest_neighbours

    k = means.shape[0]
    nb = torch.arange(k, device=means.device)[:, None]
    if k > 1:
        others = nearest_neighbours(means, min(k, NEIGHBOURS) - 1)
        nb = torch.cat([nb, torch.as_tensor(others, device=means.device)], 1)
    return nb


def climb_to_modes(means: Tensor, covs: Tensor, weights: Tensor, nb: Tensor,
                   max_iter: int = 500, rel_tol: float = 1e-7) -> Tensor:
    """End points (K, D) of modal EM started at every component mean (float64).

    Each climb sees only its row of `nb` (`neighbour_index`): the other components'
    densities are negligible there, and a step costs O(K x NEIGHBOURS x D^2), not
    O(K^2 D^2).
    """
    means, covs = means.double(), covs.double()
    k, dim = means.shape
    m = nb.shape[1]
    chol, _ = safe_logdet_cholesky(covs)
    eye = torch.eye(dim, dtype=torch.float64, device=means.device).expand(k, dim, dim)
    prec = torch.cholesky_solve(eye, chol)  # Sigma_k^-1, (K, D, D)
    prec_mu = (prec @ means[:, :, None]).squeeze(-1)  # Sigma_k^-1 mu_k, (K, D)
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    log_const = torch.log(weights.double()) - 0.5 * (logdet + dim * math.log(2 * math.pi))
    scale = torch.diagonal(covs, dim1=-2, dim2=-1).mean(-1).sqrt().min()
    x = means.clone()
    active = torch.ones(k, dtype=torch.bool, device=means.device)
    step = max(1, (1 << 24) // (m * dim * dim))
    for _ in range(max_iter):
        rows = torch.nonzero(active).squeeze(1)
        for a in range(0, len(rows), step):
            r = rows[a:a + step]
            idx = nb[r]  # (c, m)
            p = prec[idx]  # (c, m, D, D)
            diff = x[r][:, None, :] - means[idx]
            maha = torch.einsum("cmd,cmde,cme->cm", diff, p, diff)
            w = torch.softmax(log_const[idx] - 0.5 * maha, dim=1)
            lhs = torch.einsum("cm,cmde->cde", w, p)
            rhs = torch.einsum("cm,cmd->cd", w, prec_mu[idx])
            new = torch.linalg.solve(lhs, rhs[:, :, None]).squeeze(-1)
            moved = (new - x[r]).norm(dim=1)
            x[r] = new
            active[r] = moved > rel_tol * scale
        if not bool(active.any()):
            break
    return x


def mode_clusters(means: Tensor, covs: Tensor, weights: Tensor,
                  same_mode: float = 1e-2) -> Tensor:
    """Cluster index (K,) of every component: components sharing a mode share an index.

    Two end points count as one mode when they are closer than `same_mode` times the
    smaller of the two components' RMS standard deviation (compared among neighbours
    only, so memory stays O(K x NEIGHBOURS)); groups are the connected components of that
    relation, numbered by their first component.
    """
    k = means.shape[0]
    if k == 1:
        return torch.zeros(1, dtype=torch.long, device=means.device)
    nb = neighbour_index(means)
    ends = climb_to_modes(means, covs, weights, nb)
    spread = torch.diagonal(covs.double(), dim1=-2, dim2=-1).mean(-1).sqrt()
    limit = same_mode * torch.minimum(spread[:, None], spread[nb])  # (K, m)
    close = (ends[:, None, :] - ends[nb]).norm(dim=-1) <= limit  # only among neighbours
    rows = torch.arange(k, device=means.device)[:, None].expand_as(nb)[close]
    cols = nb[close]
    label = torch.arange(k, device=means.device)
    for _ in range(k):  # label propagation to the smallest index, both edge directions
        new = label.scatter_reduce(0, rows, label[cols], reduce="amin")
        new = new.scatter_reduce(0, cols, new[rows], reduce="amin")
        if bool((new == label).all()):
            break
        label = new
    return torch.unique(label, return_inverse=True)[1]
