"""Initialisations: k-means++ for the clusters, 1-D 2-means for the sub-clusters.

Both are vectorised and bounded: k-means stops after `max_iter` Lloyd steps and repairs
empty clusters (the authors' k-means could spin forever on NaN centres).
"""

from __future__ import annotations

import torch
from torch import Tensor

from clustering.niw import group_sum


def nearest_centre(x: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """(index, squared distance) of each row's nearest centre, chunked over rows."""
    idx = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    c_sq = centres.square().sum(1)
    step = max(1, (1 << 24) // max(1, centres.shape[0]))
    for a in range(0, x.shape[0], step):
        xc = x[a:a + step]
        d = (xc.square().sum(1, keepdim=True) - 2 * xc @ centres.T + c_sq).clamp_min(0)
        dist[a:a + step], idx[a:a + step] = d.min(1)
    return idx, dist


def kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator, max_iter: int = 50,
                     tol: float = 1e-6, init: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """k-means with k-means++ seeding (or from `init` centres); returns (centres (k, D),
    labels (N,))."""
    centres = init.clone() if init is not None else _seed(x, k, generator)
    labels, dist = nearest_centre(x, centres)
    stop = tol * (x.var(0).sum() + 1e-12)
    for _ in range(max_iter):
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        sums = group_sum(x, labels, k)
        empty = counts == 0
        new = sums / counts.clamp_min(1)[:, None]
        if bool(empty.any()):  # repair: move empty centres onto the worst-fitted points
            far = torch.topk(dist, int(empty.sum())).indices
            new[empty] = x[far]
        shift = (new - centres).square().sum(1).max()
        centres = new
        labels, dist = nearest_centre(x, centres)
        if bool(shift <= stop):
            break
    return centres, labels


def _seed(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: each new centre drawn with probability ~ squared distance."""
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator, device=x.device)
    centres = x[first].clone()
    best = (x - centres[0]).square().sum(1)
    for _ in range(1, k):  # seeding is sequential by nature: one draw per centre
        probs = best / best.sum() if bool(best.sum() > 0) else torch.full_like(best, 1.0 / n)
        pick = torch.multinomial(probs, 1, generator=generator)
        centres = torch.cat([centres, x[pick]])
        best = torch.minimum(best, (x - x[pick]).square().sum(1))
    return centres


def two_means_1d(x: Tensor, labels: Tensor, k: int, means: Tensor, directions: Tensor,
                 iters: int = 10) -> Tensor:
    """Split every cluster in two along its principal direction (1-D 2-means, all at once).

    Returns a 0/1 side per row. `directions` (K, D) are unit principal axes.
    """
    t = ((x - means[labels]) * directions[labels]).sum(1)
    side = (t > 0).long()
    for _ in range(iters):
        groups = labels * 2 + side
        cnt, tot = group_sum(torch.stack([torch.ones_like(t), t], 1), groups, 2 * k).T
        c = (tot / cnt.clamp_min(1)).view(k, 2)
        new_side = ((t - c[labels, 1]).abs() < (t - c[labels, 0]).abs()).long()
        if bool((new_side == side).all()):
            break
        side = new_side
    return side
