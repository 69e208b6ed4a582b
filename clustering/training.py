"""One DeepDPM fit in progress: the state an epoch changes, and the epoch that changes it.

`Training` holds what changes together while a model is fitted: the mixture
(`MixtureState`), the clustering net and the sub-cluster nets with their optimisers, the
per-point buffers (hard label, sub-cluster responsibilities), the move schedule and the
random generators. `DeepDPM` (clustering/model.py) builds one in `fit`, runs `run_epoch`
until it ends, and reads the fitted mixture from it; `clustering/persistence.py` saves and
restores it.

One epoch, top to bottom (`run_epoch`):
  1. E-step targets r_ik from the previous epoch's GMM (batched Cholesky, one GEMM/chunk).
  2. Mini-batches: the clustering net learns r~ by KL(r || r~); each sub-net learns a
     2-way split of its cluster with the isotropic sub-cluster loss.
  3. End of epoch: weighted-MAP M-step for clusters and sub-clusters from sufficient
     statistics (responsibilities: the E-step's, or the net's with m_step_from="net"),
     then, on schedule, split proposals or merge proposals that change K and
     grow/shrink the nets (optimiser state remapped, not reset); the log joint
     probability of the state is recorded.
All tensors live on one device. Under `torchrun` each rank holds its shard of X:
statistics are all-reduced, the nets train under DDP, rank 0 takes the random decisions
and broadcasts them, so K, the parameters and the history are the same on every rank.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clustering.config import DeepDPMConfig
from clustering.distributed import World
from clustering.kmeans import two_means_1d
from clustering.mixture import MixtureState
from clustering.moves import log_joint, propose_merges, propose_splits
from clustering.nets import (
    ClusterNet,
    SubclusterNets,
    TrainingNets,
    remap_cluster_net,
    remap_subcluster_nets,
)
from clustering.niw import (
    GaussianScorer,
    NIWPrior,
    Stats,
    dirichlet_weights,
    grouped_stats,
    log_marginal_likelihood,
    map_params,
    weighted_stats,
)
from data.records import EpochRecord

MIN_STEPS_PER_EPOCH = 20  # small data sets get smaller batches, so the nets still learn
CHUNK = 65536  # rows per chunk in whole-data passes (bounds memory, nothing N x K is held)


def epoch_batch_size(cap: int, n_max: int) -> int:
    """The batch every rank steps with: at most `cap`, and small enough that the largest
    shard (n_max rows) still takes MIN_STEPS_PER_EPOCH steps an epoch."""
    return min(cap, max(16, -(-n_max // MIN_STEPS_PER_EPOCH)))


def cluster_hidden(cfg: DeepDPMConfig) -> list[int]:
    return list(cfg.cluster_hidden) if cfg.cluster_hidden else [50]


class Training:
    """The state of one fit. `n_total`: rows over every shard; `n_max`: the largest shard
    (both fix the batch size and the convergence test)."""

    def __init__(self, cfg: DeepDPMConfig, prior: NIWPrior, world: World, device: torch.device,
                 generator: torch.Generator, n_total: int, n_max: int):
        self.cfg, self.prior, self.world, self.device = cfg, prior, world, device
        self.generator = generator  # shared draws (nets, moves): the same on every rank
        self.n_total, self.n_max = n_total, n_max
        self.set_data_generator(0)
        self.nets: torch.nn.Module | None = None  # see step_nets
        self.nets_with_sub = False
        self.soft_stats: Stats | None = None  # the last M-step's input (for merges)
        self.sub_ready = False
        self.last_move_epoch = -(10**9)
        self.next_move = "split"
        self.quiet_log_joints: list[float] = []
        self.end_epoch = cfg.max_epochs

    @property
    def k(self) -> int:
        return self.mix.k

    def set_data_generator(self, epoch: int) -> None:
        """The generator of this rank's own draws (mini-batch order, probe rows). One
        process: the shared generator, as always; several: one stream per rank, so that
        shards of different sizes do not put the shared generator out of step."""
        if not self.world.active:
            self.data_generator = self.generator
            return
        seed = self.cfg.seed * 1_000_003 + 7_919 * (self.world.rank + 1) + epoch
        self.data_generator = torch.Generator(device=self.device).manual_seed(seed)

    def begin(self, x: Tensor, labels: Tensor, k: int) -> None:
        """Fresh state from an initial partition into k clusters: MAP parameters of its
        clusters, new nets."""
        cfg = self.cfg
        stats = self.stats(x, labels, k)
        mu, cov = map_params(stats, self.prior)
        self.mix = MixtureState(mu, cov, dirichlet_weights(stats.n, cfg.dirichlet_count))
        self.soft_stats = stats
        dim = x.shape[1]
        self.cluster_net = ClusterNet(dim, k, cluster_hidden(cfg), self.generator, x.device)
        self.sub_nets = SubclusterNets(dim, k, cfg.subcluster_hidden, self.generator, x.device)
        self.opt_cluster = torch.optim.Adam(self.cluster_net.parameters(), lr=cfg.cluster_lr)
        self.opt_sub = torch.optim.Adam(self.sub_nets.parameters(), lr=cfg.subcluster_lr)
        self.z = labels.clone()  # hard label per point: all that persists per point
        self.sub_resp = torch.full((x.shape[0], 2), 0.5, device=x.device)
        if cfg.start_subclustering <= 0:
            self.init_subclusters(x, labels, torch.ones(k, dtype=torch.bool, device=x.device))

    # ------------------------------------------------------------------ helpers
    def step_nets(self, with_sub: bool) -> torch.nn.Module:
        """The module a training step calls: both nets as one (one backward, and across
        ranks one DDP all-reduce of both nets' gradients per step). Rebuilt when K changed
        the parameters or the sub-nets join (DDP's constructor also hands rank 0's weights
        to every rank)."""
        if self.nets is None or self.nets_with_sub != with_sub:
            nets = TrainingNets(self.cluster_net, self.sub_nets if with_sub else None)
            self.nets = self.world.data_parallel(nets, self.device)
            self.nets_with_sub = with_sub
        return self.nets

    def stats(self, x: Tensor, groups: Tensor, k: int, weights: Tensor | None = None) -> Stats:
        """Hard (or weighted) statistics of k groups over every shard."""
        return self.world.stats(grouped_stats(x, groups, k, weights))

    def batches(self, n: int) -> Any:
        """Mini-batch index ranges over this rank's n rows. Each epoch has at least
        MIN_STEPS_PER_EPOCH steps; with several ranks every rank takes the same number of
        steps (DDP needs it), its rows split evenly among them."""
        batch = epoch_batch_size(self.cfg.batch_size, self.n_max)
        perm = torch.randperm(n, generator=self.data_generator, device=self.device)
        if not self.world.active:
            return (perm[a:a + batch] for a in range(0, n, batch))
        return torch.tensor_split(perm, -(-self.n_max // batch))

    def cluster_sizes(self) -> Tensor:
        """Points per cluster over every shard (hard labels)."""
        return self.world.sum(torch.bincount(self.z, minlength=self.k))

    # ------------------------------------------------------------------ one epoch
    def run_epoch(self, x: Tensor, epoch: int) -> EpochRecord:
        cfg = self.cfg
        n = x.shape[0]
        # 1. E-step targets from the parameters frozen at the end of the previous epoch,
        # computed batch by batch: nothing N x K is ever held (memory linear in N)
        scorer = GaussianScorer(self.mix.mu, self.mix.cov, torch.log(self.mix.pi), x.dtype)
        from_gmm = cfg.m_step_from == "gmm"
        soft: Stats | None = None  # statistics of this epoch's responsibilities (M-step input)
        sub_active = self.sub_ready and epoch >= cfg.start_subclustering
        mu_sub = self.mix.mu_sub.to(x.dtype) if sub_active else None
        # 2. mini-batch training of both nets
        self.cluster_net.train()
        loss_sum = torch.zeros((), device=x.device)
        sub_loss_sum = torch.zeros((), device=x.device)
        n_batches = 0
        nets = self.step_nets(sub_active)
        for idx in self.batches(n):
            xb = x[idx]
            log_targets = scorer.log_responsibilities(xb)
            logits, sub_logits = nets(xb)
            loss = F.kl_div(F.log_softmax(logits, 1), log_targets, reduction="batchmean",
                            log_target=True)
            total = loss
            if sub_active:  # the 2-way nets of the clusters the net picks (no grad to it)
                zb = logits.detach().argmax(1)
                sub_prob = torch.softmax(sub_logits, 1)
                dist = (xb[:, None, :] - mu_sub[zb]).square().sum(-1)
                sub_loss = (sub_prob * dist).sum(1).mean()
                total = loss + sub_loss
            self.opt_cluster.zero_grad(set_to_none=True)
            self.opt_sub.zero_grad(set_to_none=True)
            total.backward()  # the losses touch disjoint nets: each gets its own gradient
            self.opt_cluster.step()
            logits = logits.detach()
            # gmm: exact EM, the targets the net was trained on; net: the net's outputs
            resp = log_targets.exp() if from_gmm else torch.softmax(logits, 1)
            part = weighted_stats(xb, resp)
            soft = part if soft is None else soft + part
            self.z[idx] = resp.argmax(1)
            loss_sum += loss.detach()
            n_batches += 1
            if sub_active:
                self.opt_sub.step()
                self.sub_resp[idx] = sub_prob.detach()
                sub_loss_sum += sub_loss.detach()
        if cfg.epoch_end_pass and not from_gmm:
            soft = self.net_pass(x)
        soft = self.world.stats(soft)
        steps = n_batches * self.world.size
        losses = self.world.sum(torch.stack([loss_sum, sub_loss_sum]))  # one sync per epoch
        record: EpochRecord = {
            "epoch": epoch,
            "cluster_loss": float(losses[0] / steps),
            "subcluster_loss": float(losses[1] / steps) if sub_active else float("nan"),
            "event": "", "splits_proposed": 0, "splits_accepted": 0,
            "merges_proposed": 0, "merges_accepted": 0, "pruned": 0,
        }
        # 3. M-steps and split/merge moves
        frozen = epoch - self.last_move_epoch <= cfg.freeze_after_step
        if epoch >= cfg.start_m_step and not frozen:
            self.m_step(soft)
            if self.sub_ready:
                self.sub_m_step(x, self.z)
        if not self.sub_ready and epoch + 1 >= cfg.start_subclustering:
            self.init_subclusters(x, self.z, torch.ones(self.k, dtype=torch.bool,
                                                        device=x.device))
        move = self.move_due(epoch, frozen)
        if move is not None:
            record["pruned"] = self.prune_empty(x, self.z)
        if move == "split":
            record.update(self.split(x, self.z))
        elif move == "merge":
            record.update(self.merge(x, self.z))
        if move is not None:
            record["event"] = move
            self.last_move_epoch = epoch
            self.next_move = "merge" if move == "split" else "split"
        record["k"] = self.k
        record["log_joint"] = float(log_joint(self.stats(x, self.z, self.k), self.prior,
                                              cfg.alpha))
        if record["event"]:
            self.check_convergence(record)
        return record

    def move_due(self, epoch: int, frozen: bool) -> str | None:
        """Explicit schedule: alternate split/merge every `split_merge_every` epochs."""
        cfg = self.cfg
        if (not self.sub_ready or frozen or epoch < cfg.start_split_merge
                or epoch >= self.end_epoch - cfg.stop_split_merge_before_end
                or (epoch - cfg.start_split_merge) % cfg.split_merge_every != 0):
            return None
        allowed = [m for m in ("split", "merge") if getattr(cfg, m)]
        if not allowed:
            return None
        if self.next_move in allowed:
            return self.next_move
        return allowed[0]

    def check_convergence(self, record: EpochRecord) -> None:
        """After a split/merge step: converged when `n_moves_no_change` steps in a row changed
        nothing and the log joint per point moved less than `tol` across them; the run then
        ends after the `stop_split_merge_before_end` refinement epochs (no moves)."""
        cfg = self.cfg
        changed = record["splits_accepted"] + record["merges_accepted"] + record["pruned"]
        self.quiet_log_joints = [] if changed else [*self.quiet_log_joints,
                                                    record["log_joint"]]
        window = self.quiet_log_joints[-cfg.n_moves_no_change:]
        if (cfg.tol is not None and len(window) == cfg.n_moves_no_change
                and (max(window) - min(window)) / self.n_total < cfg.tol):
            self.end_epoch = min(self.end_epoch,
                                 record["epoch"] + 1 + cfg.stop_split_merge_before_end)

    # ------------------------------------------------------------------ M-steps
    def net_pass(self, x: Tensor) -> Stats:
        """Statistics and hard labels of the clustering net's outputs on all of X, chunked."""
        soft = None
        self.cluster_net.eval()
        with torch.no_grad():
            for a in range(0, len(x), CHUNK):
                resp = torch.softmax(self.cluster_net(x[a:a + CHUNK]), 1)
                part = weighted_stats(x[a:a + CHUNK], resp)
                soft = part if soft is None else soft + part
                self.z[a:a + CHUNK] = resp.argmax(1)
        return soft

    def m_step(self, stats: Stats) -> None:
        self.soft_stats = stats
        self.mix.mu, self.mix.cov = map_params(stats, self.prior)
        self.mix.pi = dirichlet_weights(stats.n, self.cfg.dirichlet_count)

    def set_sub_params(self, stats: Stats, mask: Tensor) -> None:
        """Sub-cluster MAP parameters for the clusters in `mask` (weights within parent)."""
        mu, cov = map_params(stats, self.prior)
        self.mix.set_sub(mu, cov, stats.n, mask, self.cfg.dirichlet_count)

    def sub_m_step(self, x: Tensor, z: Tensor) -> None:
        k2 = 2 * self.k
        stats = self.world.stats(grouped_stats(x, 2 * z, k2, self.sub_resp[:, 0])
                                 + grouped_stats(x, 2 * z + 1, k2, self.sub_resp[:, 1]))
        self.set_sub_params(stats, torch.ones_like(self.mix.pi, dtype=torch.bool))
        side = self.sub_resp.argmax(1)
        hard = self.world.sum(torch.bincount(2 * z + side, minlength=k2)).view(-1, 2)
        degenerate = hard.min(1).values == 0  # one sub-cluster lost every point: re-seed it
        if bool(degenerate.any()):
            self.init_subclusters(x, z, degenerate)

    def init_subclusters(self, x: Tensor, z: Tensor, mask: Tensor) -> None:
        """1-D 2-means along each cluster's principal axis (clusters in `mask`)."""
        k = self.k
        if not self.sub_ready:
            self.mix.mu_sub = self.mix.mu[:, None, :].repeat(1, 2, 1)
            self.mix.cov_sub = self.mix.cov[:, None].repeat(1, 2, 1, 1)
            self.mix.pi_sub = torch.full((k, 2), 0.5, dtype=torch.float64, device=x.device)
        hard = self.stats(x, z, k)
        mean, cov = map_params(hard, self.prior)
        axes = torch.linalg.eigh(cov)[1][..., -1]  # principal direction per cluster
        side = two_means_1d(x, z, k, mean.to(x.dtype), axes.to(x.dtype), world=self.world)
        self.set_sub_params(self.stats(x, 2 * z + side, 2 * k), mask)
        rows = mask[z]
        self.sub_resp[rows] = F.one_hot(side[rows], 2).to(x.dtype)
        self.sub_ready = True

    # ------------------------------------------------------------------ moves
    def split(self, x: Tensor, z: Tensor) -> dict[str, int]:
        cfg, k = self.cfg, self.k
        side = self.sub_resp.argmax(1)
        sub_stats = self.stats(x, 2 * z + side, 2 * k)
        accept, _ = propose_splits(sub_stats, self.prior, cfg.alpha, cfg.split_min_size,
                                   cfg.subcluster_min_size, self.generator)
        accept = self.world.broadcast(accept)  # rank 0's draws decide
        self.world.sync_generator(self.generator)
        split_idx = torch.nonzero(accept).squeeze(1)
        n_split = int(split_idx.numel())
        result = {"splits_proposed": k, "splits_accepted": n_split}
        if n_split == 0:
            return result
        dev = x.device
        k_new = k + n_split
        mix, source = self.mix.split(split_idx)
        child1 = torch.full((k,), -1, dtype=torch.long, device=dev)
        child1[split_idx] = torch.arange(k, k_new, device=dev)
        z_new = torch.where(accept[z] & (side == 1), child1[z], z)
        fresh = torch.zeros(k_new, dtype=torch.bool, device=dev)
        fresh[split_idx] = True
        fresh[k:] = True
        self.apply_surgery(x, mix, source, fresh, z_new, reseed=True)
        return result

    def merge(self, x: Tensor, z: Tensor) -> dict[str, int]:
        cfg, k, dev = self.cfg, self.k, x.device
        hard = self.stats(x, z, k)
        pairs, n_proposed = self.world.broadcast_object(  # rank 0's draws decide
            propose_merges(hard, self.mix.mu.float(), self.prior, cfg.alpha,
                           cfg.merge_neighbours, self.generator))
        self.world.sync_generator(self.generator)
        result = {"merges_proposed": n_proposed, "merges_accepted": len(pairs)}
        if not pairs:
            return result
        pair_t = torch.as_tensor(pairs, device=dev)
        first, second = pair_t[:, 0], pair_t[:, 1]
        lp = log_marginal_likelihood(hard, self.prior)
        keep = torch.ones(k, dtype=torch.bool, device=dev)
        keep[second] = False
        # merged cluster: at the first member's slot, net rows from the likelier member
        source_full = torch.arange(k, device=dev)
        source_full[first] = torch.where(lp[first] >= lp[second], first, second)
        soft = self.soft_stats if self.soft_stats is not None else hard
        mu_m, cov_m = map_params(soft[first] + soft[second], self.prior)
        target = torch.arange(k, device=dev)
        target[second] = first
        z_merged = target[z]
        new_index = torch.cumsum(keep.long(), 0) - 1
        fresh_full = torch.zeros(k, dtype=torch.bool, device=dev)
        fresh_full[first] = True
        kept = torch.nonzero(keep).squeeze(1)
        # sub-responsibilities of merged points: which old cluster they came from
        merged_rows = fresh_full[z_merged]
        self.sub_resp[merged_rows] = F.one_hot((z[merged_rows] != z_merged[merged_rows]).long(),
                                               2).to(x.dtype)
        # the two old clusters become the merged cluster's sub-clusters
        mix = self.mix.merge(first, second, mu_m, cov_m, kept)
        self.apply_surgery(x, mix, source_full[kept], fresh_full[kept], new_index[z_merged],
                           reseed=False)
        return result

    def prune_empty(self, x: Tensor, z: Tensor) -> int:
        """Drop clusters that no point is assigned to: a DP mixture has no empty components."""
        keep = self.cluster_sizes() > 0
        n_empty = int((~keep).sum())
        if n_empty == 0:
            return 0
        kept = torch.nonzero(keep).squeeze(1)
        new_index = torch.cumsum(keep.long(), 0) - 1
        self.apply_surgery(x, self.mix.take(kept), kept,
                           torch.zeros_like(kept, dtype=torch.bool), new_index[z], reseed=False)
        return n_empty

    def apply_surgery(self, x: Tensor, mix: MixtureState, source: Tensor, fresh: Tensor,
                      z_new: Tensor, reseed: bool) -> None:
        """Install the new mixture (K_new clusters; `source`: the old cluster each comes
        from, `fresh`: new ones) and re-index nets and buffers; `reseed`: the fresh clusters
        get new sub-clusters (2-means), as split children do."""
        remap_cluster_net(self.cluster_net, self.opt_cluster, source)
        remap_subcluster_nets(self.sub_nets, self.opt_sub, source, fresh, self.generator)
        self.mix = mix
        self.soft_stats = None
        self.z = z_new
        self.nets = None  # new parameters: the training module is rebuilt
        if reseed and bool(fresh.any()):
            self.init_subclusters(x, z_new, fresh)

    # ------------------------------------------------------------------ resume
    def rebuild_buffers(self, x: Tensor) -> None:
        """The per-point buffers (not saved: they scale with N), from the nets."""
        self.z = argmax_in_chunks(self.cluster_net, x)
        with torch.no_grad():
            self.sub_resp = torch.cat([
                torch.softmax(self.sub_nets(x[a:a + CHUNK], self.z[a:a + CHUNK]), 1)
                for a in range(0, len(x), CHUNK)])
        self.soft_stats = None


def logits_in_chunks(net: ClusterNet, x: Tensor) -> Tensor:
    """The clustering net's logits on X in eval mode, chunk by chunk."""
    net.eval()
    with torch.no_grad():
        return torch.cat([net(x[a:a + CHUNK]) for a in range(0, len(x), CHUNK)])


def argmax_in_chunks(net: ClusterNet, x: Tensor) -> Tensor:
    """The net's most likely component per row, without holding N x K logits."""
    net.eval()
    with torch.no_grad():
        return torch.cat([net(x[a:a + CHUNK]).argmax(1) for a in range(0, len(x), CHUNK)])
