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

from clustering.distributed import World
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
                      search: bool = True, world: World | None = None,
                      data_generator: torch.Generator | None = None) -> Tensor:
    """Labels (N,) of the start: k-means at init_k, or (search) the best candidate.

    With several ranks x is this rank's shard: the probe is drawn from every shard
    (`data_generator`, one per rank), the candidates are built and scored over the ranks,
    and the winner is refined and applied on every shard (`_sharded_start`)."""
    world = world or World()
    if world.active:
        return _sharded_start(x, init_k, prior, alpha, generator, kmeans_iters, search, world,
                              data_generator or generator)
    n = x.shape[0]
    sample = x
    if n > 200_000:  # k-means on a subsample, as the authors do
        sample = x[torch.randperm(n, generator=generator, device=x.device)[:200_000]]
    probe_idx = torch.randperm(len(sample), generator=generator, device=x.device)[:INIT_PROBE]
    probe = sample[probe_idx]
    if not search or init_k > len(probe):
        centres = kmeans_plus_plus(sample, init_k, generator, kmeans_iters)[0]
        return nearest_centre(x, centres)[0]
    best_centres, best_graph = best_candidate(probe, init_k, prior, alpha, generator,
                                              kmeans_iters)
    if best_graph is None:
        if len(probe) < len(sample):  # refine the winner's centres on all the points
            best_centres = kmeans_plus_plus(sample, best_centres.shape[0], generator,
                                            kmeans_iters, init=best_centres)[0]
        return nearest_centre(x, best_centres)[0]
    if len(probe) == n:
        return best_graph[torch.argsort(probe_idx)]  # probe order back to X's order
    return torch.unique(nearest_probe_label(x, probe, best_graph), return_inverse=True)[1]


def _top(n_probe: int, init_k: int) -> int:
    return max(init_k, int(math.sqrt(n_probe)))


def ladder(n_probe: int, init_k: int) -> list[int]:
    """The k-means rungs: K = init_k and 1, 2, 4, ... up to sqrt(n_probe)."""
    top = _top(n_probe, init_k)
    return sorted({init_k, *(2 ** j for j in range(top.bit_length()) if 2 ** j <= top)})


def _score(probe: Tensor, labels: Tensor, prior: NIWPrior, alpha: float) -> float:
    k = int(labels.max()) + 1
    return float(log_joint(grouped_stats(probe, labels, k), prior, alpha))


def graph_candidates(probe: Tensor, init_k: int, prior: NIWPrior,
                     alpha: float) -> list[tuple[float, Tensor]]:
    """(log joint, labels) of each mutual-kNN-graph partition with no more pieces than the
    k-means ladder may reach, sqrt(n) (finer ones are not starts but noise)."""
    top = _top(len(probe), init_k)
    nbrs = torch.as_tensor(nearest_neighbours(probe, max(GRAPH_KS)), device=probe.device)
    out = []
    for k in GRAPH_KS:
        labels = graph_partition(nbrs, k)
        if int(labels.max()) + 1 <= top:
            out.append((_score(probe, labels, prior, alpha), labels))
    return out


def best_candidate(probe: Tensor, init_k: int, prior: NIWPrior, alpha: float,
                   generator: torch.Generator,
                   kmeans_iters: int) -> tuple[Tensor | None, Tensor | None]:
    """(centres, None) when a k-means rung wins, (None, probe labels) when a graph does
    (a graph must score strictly higher than every rung)."""
    best_centres, best_score = None, -math.inf
    for k in ladder(len(probe), init_k):
        centres, labels = kmeans_plus_plus(probe, k, generator, min(kmeans_iters, 20))
        s = _score(probe, labels, prior, alpha)
        if s > best_score:
            best_centres, best_score = centres, s
    best_graph = None
    for s, labels in graph_candidates(probe, init_k, prior, alpha):
        if s > best_score:
            best_graph, best_score = labels, s
    return (best_centres, None) if best_graph is None else (None, best_graph)


def shared_best_candidate(probe: Tensor, init_k: int, prior: NIWPrior, alpha: float,
                          generator: torch.Generator, kmeans_iters: int,
                          world: World) -> tuple[Tensor | None, Tensor | None]:
    """`best_candidate` with the candidates spread over the ranks (each holds the same
    probe): rank 0 builds the graph candidates, the others the k-means rungs in turn (rank
    0 too when it is alone). Each rung draws from its own generator, seeded from the shared
    one, so the candidates do not depend on which rank builds them. The scores are
    gathered, every rank picks the same winner, and its builder broadcasts it."""
    rungs = ladder(len(probe), init_k)
    base = int(torch.randint(2 ** 62, (1,), generator=generator, device=generator.device))
    workers = list(range(1, world.size)) or [0]
    mine: list[tuple[int, float, Tensor]] = []  # (job, score, centres or labels)
    if world.rank == 0:
        mine += [(-1 - i, s, lab) for i, (s, lab) in
                 enumerate(graph_candidates(probe, init_k, prior, alpha))]
    for j, k in enumerate(rungs):
        if workers[j % len(workers)] == world.rank:
            gen = torch.Generator(device=generator.device).manual_seed(base + k)
            centres, labels = kmeans_plus_plus(probe, k, gen, min(kmeans_iters, 20))
            mine.append((j, _score(probe, labels, prior, alpha), centres))
    table = [(job, s, r) for r, jobs in enumerate(world.gather_object(
        [(job, s) for job, s, _ in mine])) for job, s in jobs]
    rung = max((t for t in table if t[0] >= 0), key=lambda t: (t[1], -t[0]))
    graphs = [t for t in table if t[0] < 0 and t[1] > rung[1]]
    job, _, owner = max(graphs, key=lambda t: (t[1], t[0])) if graphs else rung
    payload = next((p.cpu() for j, _, p in mine if j == job), None)
    payload = world.broadcast_object(payload, src=owner)  # on the CPU: ranks' devices differ
    return (payload, None) if job >= 0 else (None, payload)


def nearest_probe_label(x: Tensor, probe: Tensor, probe_labels: Tensor) -> Tensor:
    """Each row of x takes the label of its nearest probe point (FAISS, chunked)."""
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(probe.float().cpu().numpy()))
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for a in range(0, x.shape[0], 65536):
        part = np.ascontiguousarray(x[a:a + 65536].float().cpu().numpy())
        out[a:a + 65536] = probe_labels[torch.as_tensor(index.search(part, 1)[1][:, 0],
                                                        device=x.device)]
    return out


def _sharded_start(x: Tensor, init_k: int, prior: NIWPrior, alpha: float,
                   generator: torch.Generator, kmeans_iters: int, search: bool, world: World,
                   data_generator: torch.Generator) -> Tensor:
    """The start of a sharded fit: a probe gathered from every shard (each in proportion
    to its rows), candidates spread over the ranks, then k-means refined on all shards or
    the graph labels carried to every point by its nearest probe point."""
    n_total = world.count(x.shape[0])
    share = min(x.shape[0], -(-INIT_PROBE * x.shape[0] // n_total))
    local = x[torch.randperm(x.shape[0], generator=data_generator, device=x.device)[:share]]
    probe = world.gather_rows(local)
    if not search or init_k > len(probe):
        centres = kmeans_plus_plus(probe, init_k, generator, kmeans_iters)[0]
        centres, graph = world.broadcast_object(centres.cpu()), None  # rank 0's seeding
    else:
        centres, graph = shared_best_candidate(probe, init_k, prior, alpha, generator,
                                               kmeans_iters, world)
    world.sync_generator(generator)
    if graph is None:
        centres = centres.to(x.device)
        centres = kmeans_plus_plus(x, centres.shape[0], generator, kmeans_iters, init=centres,
                                   world=world)[0]
        return nearest_centre(x, centres)[0]
    labels = nearest_probe_label(x, probe, graph.to(x.device))
    present = world.sum(torch.bincount(labels, minlength=int(graph.max()) + 1)) > 0
    return (torch.cumsum(present.long(), 0) - 1)[labels]  # numbered alike on every rank
