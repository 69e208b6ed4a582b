"""Split and merge proposals: Hastings ratios from sufficient statistics, all clusters at once.

Split:  log H_s = log a + lgamma(n1) + log p(X1) + lgamma(n2) + log p(X2) - lgamma(n) - log p(X)
Merge:  log H_m = -log H_s of the merged set seen as a split into its two clusters.
A proposal is accepted when U < min(1, H) (Metropolis-Hastings), with one U per proposal.
Merge candidates are each cluster's nearest neighbours among the means (FAISS kNN).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from clustering.niw import NIWPrior, Stats, log_marginal_likelihood


def _lgamma0(n: Tensor) -> Tensor:
    """lgamma with lgamma(0) taken as 0 (an empty cluster adds no partition term)."""
    return torch.where(n > 0, torch.lgamma(n.clamp_min(1e-12)), torch.zeros_like(n))


def split_log_ratio(sub_stats: Stats, prior: NIWPrior, alpha: float) -> Tensor:
    """log H_s for every cluster k from the stats of its sub-clusters 2k, 2k+1: (K,)."""
    parent = sub_stats.pairs()
    lp_sub = log_marginal_likelihood(sub_stats, prior).view(-1, 2)
    lp_parent = log_marginal_likelihood(parent, prior)
    n_sub = sub_stats.n.view(-1, 2)
    return (math.log(alpha) + (_lgamma0(n_sub) + lp_sub).sum(1)
            - _lgamma0(parent.n) - lp_parent)


def log_joint(stats: Stats, prior: NIWPrior, alpha: float) -> Tensor:
    """log p(partition, X) of a DP mixture with NIW components, from the groups' hard stats.

    log p = K log a + sum_k [lgamma(n_k) + log p(X_k)] + lgamma(a) - lgamma(N + a):
    the Chinese-restaurant prior of the partition times each cluster's marginal
    likelihood. Split and merge moves are Metropolis-Hastings steps on exactly this
    quantity (log H_s is its change under a split), so it is what the search climbs.
    Empty groups do not count. Returns a 0-D float64 tensor.
    """
    n = stats.n
    used = n > 0.5
    lml = torch.where(used, log_marginal_likelihood(stats, prior), torch.zeros_like(n))
    total = n.sum()
    return (used.sum() * math.log(alpha) + (_lgamma0(n) * used).sum() + lml.sum()
            + math.lgamma(alpha) - torch.lgamma(total + alpha))


def propose_splits(sub_stats: Stats, prior: NIWPrior, alpha: float, min_size: int,
                   min_child: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(accepted mask (K,), log H_s (K,)); too-small clusters or children are rejected."""
    log_h = split_log_ratio(sub_stats, prior, alpha)
    n_sub = sub_stats.n.view(-1, 2)
    eligible = (n_sub.sum(1) >= min_size) & (n_sub.min(1).values > min_child)
    u = torch.rand(log_h.shape, generator=generator, device=log_h.device, dtype=log_h.dtype)
    return eligible & (torch.log(u) < log_h), log_h


def nearest_neighbours(points: Tensor, k: int) -> np.ndarray:
    """Indices (N, k) of each row's k nearest other rows (exact FAISS search, on the GPU
    when the tensor is on CUDA and FAISS has GPUs): cluster means for the merge proposals,
    probe points for the neighbour-graph starts."""
    import faiss

    x = np.ascontiguousarray(points.detach().float().cpu().numpy())
    index: faiss.Index = faiss.IndexFlatL2(x.shape[1])
    if points.is_cuda and faiss.get_num_gpus() > 0:  # else index_cpu_to_gpu is silently empty
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(x)
    _, nbrs = index.search(x, min(k + 1, x.shape[0]))
    # drop each row itself: usually column 0, but ties with duplicates can move it
    others = nbrs != np.arange(x.shape[0])[:, None]
    order = np.argsort(~others, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(nbrs, order, axis=1)


def merge_log_ratio(stats: Stats, pairs: Tensor, prior: NIWPrior, alpha: float) -> Tensor:
    """log H_m for each candidate pair (P, 2) from the clusters' hard stats."""
    a, b = stats[pairs[:, 0]], stats[pairs[:, 1]]
    union = a + b
    lp = log_marginal_likelihood(Stats(torch.cat([union.n, a.n, b.n]),
                                       torch.cat([union.s, a.s, b.s]),
                                       torch.cat([union.m2, a.m2, b.m2])), prior)
    lp_u, lp_a, lp_b = lp.view(3, -1)
    return (_lgamma0(union.n) - math.log(alpha) - _lgamma0(a.n) - _lgamma0(b.n)
            + lp_u - lp_a - lp_b)


def propose_merges(stats: Stats, means: Tensor, prior: NIWPrior, alpha: float,
                   neighbours: int, generator: torch.Generator,
                   ) -> tuple[list[tuple[int, int]], int]:
    """Accepted merge pairs (no cluster twice) and the number of pairs proposed.

    Candidate pairs (each cluster and its nearest neighbours, de-duplicated) are scored at
    once; they are then visited from the most to the least favourable ratio, and a pair
    is skipped if either cluster already merged in this step.
    """
    k = means.shape[0]
    if k < 2:
        return [], 0
    nbrs = nearest_neighbours(means, min(neighbours, k - 1))
    rows = np.repeat(np.arange(k), nbrs.shape[1])
    pairs = np.sort(np.stack([rows, nbrs.reshape(-1)], 1), axis=1)
    pairs = np.unique(pairs, axis=0)
    pairs_t = torch.as_tensor(pairs, device=stats.n.device)
    log_h = merge_log_ratio(stats, pairs_t, prior, alpha)
    u = torch.rand(log_h.shape, generator=generator, device=log_h.device, dtype=log_h.dtype)
    accept = (torch.log(u) < log_h).cpu().numpy()
    order = torch.argsort(log_h, descending=True).cpu().numpy()
    used = np.zeros(k, dtype=bool)
    chosen: list[tuple[int, int]] = []
    for p in order:  # greedy matching over at most K * neighbours candidate pairs
        i, j = pairs[p]
        if accept[p] and not used[i] and not used[j]:
            used[i] = used[j] = True
            chosen.append((int(i), int(j)))
    return chosen, len(pairs)
