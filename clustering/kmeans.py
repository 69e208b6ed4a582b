"""Initialisations: k-means++ for the clusters, 1-D 2-means for the sub-clusters.

Both are vectorised and bounded: k-means stops after `max_iter` Lloyd steps and repairs
empty clusters (the authors' k-means could spin forever on NaN centres).
"""

from __future__ import annotations

import torch
from torch import Tensor

from clustering.distributed import World
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
                     tol: float = 1e-6, init: Tensor | None = None,
                     world: World | None = None) -> tuple[Tensor, Tensor]:
    """k-means with k-means++ seeding (or from `init` centres); returns (centres (k, D),
    labels (N,)). With a `world` of several ranks, x is this rank's shard and `init` is
    required (seeding is sequential): Lloyd steps on counts and sums over all shards."""
    world = world or World()
    if init is None and world.active:
        raise ValueError("sharded k-means needs init centres (seed on a gathered probe)")
    centres = init.clone() if init is not None else _seed(x, k, generator)
    labels, dist = nearest_centre(x, centres)
    stop = tol * (_total_variance(x, world) + 1e-12)
    for _ in range(max_iter):
        counts = world.sum(torch.bincount(labels, minlength=k).to(x.dtype))
        sums = world.sum(group_sum(x, labels, k))
        empty = counts == 0
        new = sums / counts.clamp_min(1)[:, None]
        if bool(empty.any()):  # repair: move empty centres onto the worst-fitted points
            new[empty] = _worst_fitted(x, dist, int(empty.sum()), world)
        shift = (new - centres).square().sum(1).max()
        centres = new
        labels, dist = nearest_centre(x, centres)
        if bool(shift <= stop):
            break
    return centres, labels


def _total_variance(x: Tensor, world: World) -> Tensor:
    """Sum of the column variances of x (all shards)."""
    if not world.active:
        return x.var(0).sum()
    n = world.count(len(x))
    s = world.sum(x.double().sum(0))
    sq = world.sum(x.double().square().sum(0))
    return ((sq - s.square() / n).sum() / max(n - 1, 1)).to(x.dtype)


def _worst_fitted(x: Tensor, dist: Tensor, m: int, world: World) -> Tensor:
    """The m rows farthest from their centre, over all shards (the same on every rank)."""
    top = torch.topk(dist, min(m, len(dist)))
    if not world.active:
        return x[top.indices]
    far = world.gather_rows(torch.cat([top.values[:, None], x[top.indices]], 1))
    return far[torch.topk(far[:, 0], m).indices, 1:]


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
                 iters: int = 10, world: World | None = None) -> Tensor:
    """Split every cluster in two along its principal direction (1-D 2-means, all at once).

    Returns a 0/1 side per row. `directions` (K, D) are unit principal axes. With several
    ranks the two centres per cluster come from every shard's sums.
    """
    world = world or World()
    t = ((x - means[labels]) * directions[labels]).sum(1)
    side = (t > 0).long()
    for _ in range(iters):
        groups = labels * 2 + side
        cnt, tot = world.sum(group_sum(torch.stack([torch.ones_like(t), t], 1), groups,
                                       2 * k)).T
        c = (tot / cnt.clamp_min(1)).view(k, 2)
        new_side = ((t - c[labels, 1]).abs() < (t - c[labels, 0]).abs()).long()
        same = (new_side == side).all()
        if bool(world.min(same.to(torch.int32)) if world.active else same):
            break
        side = new_side
    return side
