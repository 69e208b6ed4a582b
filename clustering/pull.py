"""The AE alternation's pull: losses that draw each code towards its cluster's centre.

Alternation t >= 1 trains the autoencoder on lambda_ * reconstruction + beta / 2 * pull,
with the centres held fixed from the previous clustering (docs/alternation.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

PullLoss = Callable[[Tensor, Tensor], Tensor]  # (codes of a batch, their row indices) -> loss


def cluster_means(codes: Tensor, labels: Tensor) -> Tensor:
    """Means of the codes per label, empty labels dropped (one index_add, no loop)."""
    k = int(labels.max()) + 1
    sums = torch.zeros(k, codes.shape[1], dtype=codes.dtype, device=codes.device)
    sums.index_add_(0, labels, codes)
    counts = torch.bincount(labels, minlength=k)
    keep = counts > 0
    return sums[keep] / counts[keep, None].to(codes.dtype)


def soft_means(codes: Tensor, resp: Tensor) -> Tensor:
    """Responsibility-weighted means (K x d) of the codes."""
    return (resp.T @ codes) / resp.sum(0).clamp_min(1e-12)[:, None]


def squared_distances(z: Tensor, centres: Tensor) -> Tensor:
    """B x K squared distances, differentiable everywhere (cdist's sqrt is not at 0)."""
    d2 = z.pow(2).sum(1, keepdim=True) - 2 * z @ centres.T + centres.pow(2).sum(1)[None]
    return d2.clamp_min(0)


def hard_pull(centres: Tensor, unit: float = 1.0) -> PullLoss:
    """Loss ||z_i - c_{a_i}||^2 / unit with a_i the nearest fixed centre (authors' min_dist)."""

    def loss(z: Tensor, idx: Tensor) -> Tensor:
        with torch.no_grad():
            a = squared_distances(z, centres).argmin(1)
        return (z - centres[a]).pow(2).sum(1).mean() / unit

    return loss


def soft_pull(centres: Tensor, resp: Tensor, unit: float = 1.0) -> PullLoss:
    """Loss sum_k r_ik ||z_i - c_k||^2 / unit with r fixed from the previous clustering net."""

    def loss(z: Tensor, idx: Tensor) -> Tensor:
        return (resp[idx] * squared_distances(z, centres)).sum(1).mean() / unit

    return loss


def code_unit(codes: Tensor) -> float:
    """Mean per-dimension variance of the codes: the pull is measured in these units.

    The authors' latent is BatchNorm'd (about unit variance per dimension), so their beta
    assumes unit-scale codes; dividing by the codes' variance gives our linear codes the
    same scale whatever the AE learned.
    """
    return float(codes.var(0).mean().clamp_min(1e-12))
