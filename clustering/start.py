"""Where the split/merge search starts: the candidate partition with the highest log joint.

Splits and merges are local moves. In high dimension with few points per cluster the log
joint has barriers they cannot cross: between K = 1 and many small clusters (every 2-way
split of a mixture of many low-rank clusters pays a full-covariance price in D^2
parameters before its pieces are pure), and between a k-means partition and the true one
when clusters are thin and long (k-means cuts across them; bench/k_evidence.py,
docs/benchmarks.md). So several kinds of start are proposed and the model chooses:

- k-means++ partitions at K = init_k and K = 1, 2, 4, ... sqrt(n) (round clusters);
- the connected components of the mutual k-nearest-neighbour graph for k = 5, 10, 20
  (thin, curved or low-rank clusters that k-means cuts; the density's own pieces), their
  components smaller than MIN_PIECE points joined to a neighbour's component.

All are scored by log p(partition, X) under the model's prior on a probe of at most
INIT_PROBE points; the best one is the start. Nothing is tuned per data set: the graph
sizes are fixed, and the posterior, not a threshold, decides.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from clustering.kmeans import kmeans_plus_plus, nearest_centre
from clustering.moves import log_joint, nearest_neighbours
from clustering.niw import NIWPrior, grouped_stats

INIT_PROBE = 20_000  # points on which the candidates are built and scored
GRAPH_KS = (5, 10, 20)  # neighbourhood sizes of the mutual-kNN-graph candidates
MIN_PIECE = 5  # graph components smaller than this join a neighbour's component


def components(n: int, rows: Tensor, cols: Tensor) -> Tensor:
    """Connected components (labels 0..C-1, numbered by first member) of the undirected
    graph with edges rows[i] -- cols[i]: min-label propagation with pointer jumping."""
    label = torch.arange(n, device=rows.device)
    while True:
        new = label.scatter_reduce(0, rows, label[cols], reduce="amin")
        new = new.scatter_reduce(0, cols, new[rows], reduce="amin")
        new = new[new]  # jump: a label's own label is in the same component
        if bool((new == label).all()):
            return torch.unique(label, return_inverse=True)[1]
        label = new


def graph_partition(nbrs: Tensor, k: int) -> Tensor:
    """Components of the mutual k-NN graph (nbrs: (N, >= k) neighbour lists); points of
    components smaller than MIN_PIECE take the label of their nearest neighbour in a
    large one (if any; else their component stays)."""
    n = nbrs.shape[0]
    nb = nbrs[:, :k]
    rows = torch.arange(n, device=nb.device)[:, None].expand_as(nb)
    mutual = (nb[nb] == rows[:, :, None]).any(-1)  # j lists i among its own k as well
    label = components(n, rows[mutual], nb[mutual])
    sizes = torch.bincount(label)
    small = sizes[label] < MIN_PIECE
    big_nb = ~(sizes[label[nbrs]] < MIN_PIECE)  # (N, m): neighbour lies in a large piece
    first = big_nb.float().argmax(1)
    adopt = small & big_nb.any(1)
    label = torch.where(adopt, label[nbrs[torch.arange(n, device=nb.device), first]], label)
    return torch.unique(label, return_inverse=True)[1]


def initial_partition(x: Tensor, init_k: int, prior: NIWPrior, alpha: float,
                      generator: torch.Generator, kmeans_iters: int,
                      search: bool = True) -> Tensor:
    """Labels (N,) of the start: k-means at init_k, or (search) the best candidate."""
    n = x.shape[0]
    sample = x
    if n > 200_000:  # k-means on a subsample, as the authors do
        sample = x[torch.randperm(n, generator=generator, device=x.device)[:200_000]]
    probe_idx = torch.randperm(len(sample), generator=generator, device=x.device)[:INIT_PROBE]
    probe = sample[probe_idx]
    if not search or init_k > len(probe):
        centres = kmeans_plus_plus(sample, init_k, generator, kmeans_iters)[0]
        return nearest_centre(x, centres)[0]

    def score(labels: Tensor) -> float:
        k = int(labels.max()) + 1
        return float(log_joint(grouped_stats(probe, labels, k), prior, alpha))

    top = max(init_k, int(math.sqrt(len(probe))))
    ladder = sorted({init_k, *(2 ** j for j in range(top.bit_length()) if 2 ** j <= top)})
    best_centres, best_score = None, -math.inf
    for k in ladder:
        centres, labels = kmeans_plus_plus(probe, k, generator, min(kmeans_iters, 20))
        s = score(labels)
        if s > best_score:
            best_centres, best_score = centres, s
    best_graph = None
    nbrs = torch.as_tensor(nearest_neighbours(probe, max(GRAPH_KS)), device=x.device)
    for k in GRAPH_KS:
        labels = graph_partition(nbrs, k)
        if int(labels.max()) + 1 > top:  # more pieces than any k-means rung: too fine
            continue
        s = score(labels)
        if s > best_score:
            best_graph, best_score = labels, s
    if best_graph is None:
        if len(probe) < len(sample):  # refine the winner's centres on all the points
            best_centres = kmeans_plus_plus(sample, best_centres.shape[0], generator,
                                            kmeans_iters, init=best_centres)[0]
        return nearest_centre(x, best_centres)[0]
    if len(probe) == n:
        return best_graph[torch.argsort(probe_idx)]  # probe order back to X's order
    # the other points take the label of their nearest probe point
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(probe.float().cpu().numpy()))
    out = torch.empty(n, dtype=torch.long, device=x.device)
    for a in range(0, n, 65536):
        part = np.ascontiguousarray(x[a:a + 65536].float().cpu().numpy())
        out[a:a + 65536] = best_graph[torch.as_tensor(index.search(part, 1)[1][:, 0],
                                                      device=x.device)]
    return torch.unique(out, return_inverse=True)[1]
