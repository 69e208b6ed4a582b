"""DeepDPM as a scikit-learn style estimator, trained by a plain PyTorch loop.

One epoch, top to bottom (see `_run_epoch`):
  1. E-step targets r_ik from the previous epoch's GMM (batched Cholesky, one GEMM/chunk).
  2. Mini-batches: the clustering net learns r~ by KL(r || r~); each sub-net learns a
     2-way split of its cluster with the isotropic sub-cluster loss.
  3. End of epoch: weighted-MAP M-step for clusters and sub-clusters from sufficient
     statistics (responsibilities: the E-step's, or the net's with m_step_from="net"),
     then, on schedule, split proposals or merge proposals that change K and
     grow/shrink the nets (optimiser state remapped, not reset); the log joint
     probability of the state is recorded.
At the end, components that share a mode of the fitted density become one cluster.
All tensors live on one device; X is moved there once.

Under `torchrun` each rank fits its shard of X (clustering/distributed.py): statistics are
all-reduced, the nets train under DDP, rank 0 takes the random decisions and broadcasts
them, so K, the parameters and the history are the same on every rank.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClusterMixin
from torch import Tensor

from clustering.config import CONFIG_KEYS, DeepDPMConfig
from clustering.distributed import World
from clustering.kmeans import nearest_centre, two_means_1d
from clustering.metrics import evaluate
from clustering.mixture import MixtureState
from clustering.modes import mode_clusters
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
    Stats,
    dirichlet_weights,
    grouped_stats,
    log_marginal_likelihood,
    map_params,
    weighted_stats,
)
from clustering.persistence import (
    load_model,
    prepare_resume_buffers,
    restore_training,
    save_model,
)
from clustering.prior import data_prior
from clustering.start import initial_partition
from clustering.transform import InputTransform
from clustering.validation import (
    NotFittedError,
    check_array,
    check_config,
    check_fit_inputs,
)
from data.devices import resolve_device
from data.errors import InputError
from data.records import EpochCallback, EpochRecord

MIN_STEPS_PER_EPOCH = 20  # small data sets get smaller batches, so the nets still learn


def epoch_batch_size(cap: int, n_max: int) -> int:
    """The batch every rank steps with: at most `cap`, and small enough that the largest
    shard (n_max rows) still takes MIN_STEPS_PER_EPOCH steps an epoch."""
    return min(cap, max(16, -(-n_max // MIN_STEPS_PER_EPOCH)))


class DeepDPM(ClusterMixin, BaseEstimator):
    """Deep clustering with an unknown number of clusters (Ronen et al., CVPR 2022).

    `DeepDPM(init_k=1).fit(X)` infers K; see `DeepDPMConfig` for every parameter. A
    scikit-learn estimator: the parameters are attributes (`get_params`, `set_params`,
    `clone`, pipelines and grid search work) and are checked in `fit`.
    """

    def __init__(self, **params: Any):  # the signature: DeepDPMConfig's fields (below)
        unknown = sorted(set(params) - set(CONFIG_KEYS))
        if unknown:
            raise InputError(f"unknown parameter(s) {unknown}; valid: {sorted(CONFIG_KEYS)}")
        for f in fields(DeepDPMConfig):
            setattr(self, f.name, params.get(f.name, f.default))
        self._world = World()
        self._nets: torch.nn.Module | None = None  # see _step_nets
        self._nets_with_sub = False
        self._fitted = False
        self._train_state: dict[str, Any] | None = None

    @property
    def config(self) -> DeepDPMConfig:
        """The parameters as one DeepDPMConfig (what the model reads)."""
        return DeepDPMConfig(**{key: getattr(self, key) for key in CONFIG_KEYS})

    def fit(self, X: Any, y: Any = None, *, init_means: Any = None,
            on_epoch: EpochCallback | None = None, resume: bool = False) -> DeepDPM:
        """Infer K and the clustering of X (N x D). Labels `y` are used for metrics only.

        Under torchrun (a process group initialised), X and y are this rank's shard
        (near-equal shards, in rank order); `labels_` then covers every shard, in order."""
        cfg = self.config
        self._world = World.current()
        x_np, y, self._n_total, self._n_max = check_fit_inputs(
            X, y, self._world, lambda n_max: epoch_batch_size(cfg.batch_size, n_max))
        check_config(cfg, self._n_total, x_np.shape[1])
        self.device_ = self._world.device(resolve_device(cfg.device))
        threads = torch.get_num_threads()
        if self.device_.type == "cpu" and cfg.cpu_threads is not None:
            torch.set_num_threads(cfg.cpu_threads)
        try:
            self._fit(x_np, y, init_means, on_epoch, resume)
        finally:
            torch.set_num_threads(threads)
        return self

    def _fit(self, x_np: np.ndarray, y: np.ndarray | None, init_means: Any,
             on_epoch: EpochCallback | None, resume: bool) -> None:
        cfg = self.config
        dim = x_np.shape[1]
        self.n_features_in_ = dim
        if resume:
            if self._train_state is None:
                raise InputError("resume=True needs a model loaded with DeepDPM.load")
            saved = self._train_state["transform"]
            fitted_dim = saved.get("in_dim") or self._train_state["dim"]
            if fitted_dim != dim:
                raise InputError(f"X has {dim} columns but the saved model was fitted on "
                                 f"{fitted_dim}")
            restore_training(self, self._train_state)
            x = self.transform_(x_np)
            prepare_resume_buffers(self, x)
            self._set_data_generator(self.epoch_ + 1)
            start = self.epoch_ + 1
        else:
            self.transform_ = InputTransform(cfg.input_transform, cfg.whiten_dim).fit(
                x_np, self.device_, self._world)
            x = self.transform_(x_np)
            self._generator = torch.Generator(device=self.device_).manual_seed(cfg.seed)
            self._set_data_generator(0)
            self.prior_ = data_prior(x, cfg, self.transform_, self._world)
            self._init_params(x, init_means)
            self.history_: list[EpochRecord] = []
            start = 0
        y_codes = None if y is None else np.unique(y, return_inverse=True)[1]

        epochs = range(start, self._end_epoch)
        bar = None
        if cfg.verbose and self._world.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(epochs, desc="DeepDPM", unit="epoch")
            epochs = bar
        self._train(x, epochs, y_codes, bar, on_epoch, time.perf_counter())
        if bar is not None:
            bar.close()
        self._fitted = True
        self._export(x)
        if y_codes is not None:
            self.metrics_ = evaluate(y_codes, self.labels_)

    def _train(self, x: Tensor, epochs: Any, y_codes: np.ndarray | None, bar: Any,
               on_epoch: EpochCallback | None, t0: float) -> None:
        cfg = self.config
        for epoch in epochs:
            record = self._run_epoch(x, epoch)
            record["seconds"] = time.perf_counter() - t0
            if record["event"]:
                self._check_convergence(record, self._n_total)
            last = epoch + 1 >= self._end_epoch
            z = self._z
            sizes = self._world.sum(torch.bincount(z, minlength=self.k_)).cpu().numpy()
            record["k_used"] = int((sizes > 0).sum())
            if y_codes is not None and (epoch % cfg.eval_every == 0 or last):
                z_all = self._world.gather_rows(z).cpu().numpy()
                record.update({key: v for key, v in evaluate(y_codes, z_all).items()
                               if key != "k"})
            self.history_.append(record)
            self.epoch_ = epoch
            if bar is not None:
                bar.set_postfix(K=self.k_, loss=f"{record['cluster_loss']:.3g}",
                                event=record["event"] or "-")
            if on_epoch is not None:
                on_epoch({**record, "sizes": sizes})
            if last:
                break
        self.n_iter_ = len(self.history_)
        self.converged_ = self._end_epoch < cfg.max_epochs

    def _check_convergence(self, record: EpochRecord, n: int) -> None:
        """After a split/merge step: converged when `n_moves_no_change` steps in a row changed
        nothing and the log joint per point moved less than `tol` across them; the run then
        ends after the `stop_split_merge_before_end` refinement epochs (no moves)."""
        cfg = self.config
        changed = record["splits_accepted"] + record["merges_accepted"] + record["pruned"]
        self._quiet_log_joints = [] if changed else [*self._quiet_log_joints,
                                                     record["log_joint"]]
        window = self._quiet_log_joints[-cfg.n_moves_no_change:]
        if (cfg.tol is not None and len(window) == cfg.n_moves_no_change
                and (max(window) - min(window)) / n < cfg.tol):
            self._end_epoch = min(self._end_epoch,
                                  record["epoch"] + 1 + cfg.stop_split_merge_before_end)

    def fit_predict(self, X: Any, y: Any = None, **kwargs: Any) -> np.ndarray:
        return self.fit(X, y, **kwargs).labels_

    def predict_proba(self, X: Any) -> np.ndarray:
        """Soft cluster assignments, N x n_clusters_ float32: the clustering net's
        component probabilities summed over the components of each cluster."""
        prob = torch.softmax(self._forward_chunks(self._inputs(X)), dim=1)
        groups = self.component_cluster_.to(prob.device)
        out = prob.new_zeros(prob.shape[0], self.n_clusters_)
        return out.index_add_(1, groups, prob).cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Hard cluster labels (the cluster of the net's most likely component), int64."""
        return self._labels_of(self._argmax_chunks(self._inputs(X)))

    def _labels_of(self, component: Tensor) -> np.ndarray:
        groups = self.component_cluster_.to(component.device)
        return groups[component].cpu().numpy().astype(np.int64)

    # ------------------------------------------------------------------ set-up
    def _set_data_generator(self, epoch: int) -> None:
        """The generator of this rank's own draws (mini-batch order, probe rows). One
        process: the model's generator, as always; several: one stream per rank, so that
        shards of different sizes do not put the shared generator out of step."""
        if not self._world.active:
            self._data_generator = self._generator
            return
        seed = self.config.seed * 1_000_003 + 7_919 * (self._world.rank + 1) + epoch
        self._data_generator = torch.Generator(device=self.device_).manual_seed(seed)

    def _step_nets(self, with_sub: bool) -> torch.nn.Module:
        """The module a training step calls: both nets as one (one backward, and across
        ranks one DDP all-reduce of both nets' gradients per step). Rebuilt when K changed
        the parameters or the sub-nets join (DDP's constructor also hands rank 0's weights
        to every rank)."""
        if self._nets is None or self._nets_with_sub != with_sub:
            nets = TrainingNets(self.cluster_net_, self.sub_nets_ if with_sub else None)
            self._nets = self._world.data_parallel(nets, self.device_)
            self._nets_with_sub = with_sub
        return self._nets

    def _stats(self, x: Tensor, groups: Tensor, k: int, weights: Tensor | None = None) -> Stats:
        """Hard (or weighted) statistics of k groups over every shard."""
        return self._world.stats(grouped_stats(x, groups, k, weights))

    def _batches(self, n: int) -> Any:
        """Mini-batch index ranges over this rank's n rows. Each epoch has at least
        MIN_STEPS_PER_EPOCH steps; with several ranks every rank takes the same number of
        steps (DDP needs it), its rows split evenly among them."""
        batch = self._batch_size()
        perm = torch.randperm(n, generator=self._data_generator, device=self.device_)
        if not self._world.active:
            return (perm[a:a + batch] for a in range(0, n, batch))
        return torch.tensor_split(perm, -(-self._n_max // batch))

    def _batch_size(self) -> int:
        return epoch_batch_size(self.config.batch_size, self._n_max)

    def _init_params(self, x: Tensor, init_means: Any) -> None:
        cfg, dim = self.config, x.shape[1]  # dim: after the transform
        if init_means is not None:
            centres = check_array(init_means, "init_means", min_rows=1)
            raw_dim = self.transform_.in_dim
            if centres.shape[1] != raw_dim:
                raise InputError(f"init_means has {centres.shape[1]} columns, X has {raw_dim}")
            centres_t = self.transform_(centres)
            labels, _ = nearest_centre(x, centres_t)
            k = centres.shape[0]
        else:
            labels = initial_partition(x, cfg.init_k, self.prior_, cfg.alpha, self._generator,
                                       cfg.kmeans_iters, cfg.init_search, self._world,
                                       self._data_generator)
            k = int(self._world.max(labels.max())) + 1
        self.k_ = k
        stats = self._stats(x, labels, k)
        mu, cov = map_params(stats, self.prior_)
        self._mix = MixtureState(mu, cov, dirichlet_weights(stats.n, cfg.dirichlet_count))
        self._soft_stats: Stats | None = stats
        hidden = list(cfg.cluster_hidden) if cfg.cluster_hidden else [50]
        self.cluster_net_ = ClusterNet(dim, k, hidden, self._generator, x.device)
        self.sub_nets_ = SubclusterNets(dim, k, cfg.subcluster_hidden, self._generator, x.device)
        self._opt_cluster = torch.optim.Adam(self.cluster_net_.parameters(), lr=cfg.cluster_lr)
        self._opt_sub = torch.optim.Adam(self.sub_nets_.parameters(), lr=cfg.subcluster_lr)
        self._nets = None
        self._z = labels.clone()  # hard label per point: all that persists per point
        self._sub_resp = torch.full((x.shape[0], 2), 0.5, device=x.device)
        self._sub_ready = False
        self._last_move_epoch = -(10**9)
        self._next_move = "split"
        self._quiet_log_joints: list[float] = []
        self._end_epoch = cfg.max_epochs
        self.epoch_ = -1
        if cfg.start_subclustering <= 0:
            self._init_subclusters(x, labels, torch.ones(k, dtype=torch.bool, device=x.device))

    # ------------------------------------------------------------------ one epoch
    def _run_epoch(self, x: Tensor, epoch: int) -> EpochRecord:
        cfg = self.config
        n = x.shape[0]
        # 1. E-step targets from the parameters frozen at the end of the previous epoch,
        # computed batch by batch: nothing N x K is ever held (memory linear in N)
        scorer = GaussianScorer(self._mix.mu, self._mix.cov, torch.log(self._mix.pi), x.dtype)
        from_gmm = cfg.m_step_from == "gmm"
        soft: Stats | None = None  # statistics of this epoch's responsibilities (M-step input)
        sub_active = self._sub_ready and epoch >= cfg.start_subclustering
        mu_sub = self._mix.mu_sub.to(x.dtype) if sub_active else None
        # 2. mini-batch training of both nets
        self.cluster_net_.train()
        loss_sum = torch.zeros((), device=x.device)
        sub_loss_sum = torch.zeros((), device=x.device)
        n_batches = 0
        nets = self._step_nets(sub_active)
        for idx in self._batches(n):
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
            self._opt_cluster.zero_grad(set_to_none=True)
            self._opt_sub.zero_grad(set_to_none=True)
            total.backward()  # the losses touch disjoint nets: each gets its own gradient
            self._opt_cluster.step()
            logits = logits.detach()
            # gmm: exact EM, the targets the net was trained on; net: the net's outputs
            resp = log_targets.exp() if from_gmm else torch.softmax(logits, 1)
            part = weighted_stats(xb, resp)
            soft = part if soft is None else soft + part
            self._z[idx] = resp.argmax(1)
            loss_sum += loss.detach()
            n_batches += 1
            if sub_active:
                self._opt_sub.step()
                self._sub_resp[idx] = sub_prob.detach()
                sub_loss_sum += sub_loss.detach()
        if cfg.epoch_end_pass and not from_gmm:
            soft = self._net_pass(x)
        soft = self._world.stats(soft)
        steps = n_batches * self._world.size
        losses = self._world.sum(torch.stack([loss_sum, sub_loss_sum]))  # one sync per epoch
        record: EpochRecord = {
            "epoch": epoch,
            "cluster_loss": float(losses[0] / steps),
            "subcluster_loss": float(losses[1] / steps) if sub_active else float("nan"),
            "event": "", "splits_proposed": 0, "splits_accepted": 0,
            "merges_proposed": 0, "merges_accepted": 0, "pruned": 0,
        }
        # 3. M-steps and split/merge moves
        z = self._z
        frozen = epoch - self._last_move_epoch <= cfg.freeze_after_step
        if epoch >= cfg.start_m_step and not frozen:
            self._m_step(soft)
            if self._sub_ready:
                self._sub_m_step(x, z)
        if not self._sub_ready and epoch + 1 >= cfg.start_subclustering:
            self._init_subclusters(x, z, torch.ones(self.k_, dtype=torch.bool, device=x.device))
        move = self._move_due(epoch, frozen)
        if move is not None:
            record["pruned"] = self._prune_empty(x, z)
            z = self._z
        if move == "split":
            record.update(self._split(x, z))
        elif move == "merge":
            record.update(self._merge(x, z))
        if move is not None:
            record["event"] = move
            self._last_move_epoch = epoch
            self._next_move = "merge" if move == "split" else "split"
        record["k"] = self.k_
        z = self._z
        record["log_joint"] = float(log_joint(self._stats(x, z, self.k_), self.prior_, cfg.alpha))
        return record

    def _move_due(self, epoch: int, frozen: bool) -> str | None:
        """Explicit schedule: alternate split/merge every `split_merge_every` epochs."""
        cfg = self.config
        if (not self._sub_ready or frozen or epoch < cfg.start_split_merge
                or epoch >= self._end_epoch - cfg.stop_split_merge_before_end
                or (epoch - cfg.start_split_merge) % cfg.split_merge_every != 0):
            return None
        allowed = [m for m in ("split", "merge") if getattr(cfg, m)]
        if not allowed:
            return None
        if self._next_move in allowed:
            return self._next_move
        return allowed[0]

    # ------------------------------------------------------------------ M-steps
    def _net_pass(self, x: Tensor, chunk: int = 65536) -> Stats:
        """Statistics and hard labels of the clustering net's outputs on all of X, chunked."""
        soft = None
        self.cluster_net_.eval()
        with torch.no_grad():
            for a in range(0, len(x), chunk):
                resp = torch.softmax(self.cluster_net_(x[a:a + chunk]), 1)
                part = weighted_stats(x[a:a + chunk], resp)
                soft = part if soft is None else soft + part
                self._z[a:a + chunk] = resp.argmax(1)
        return soft

    def _m_step(self, stats: Stats) -> None:
        self._soft_stats = stats
        self._mix.mu, self._mix.cov = map_params(stats, self.prior_)
        self._mix.pi = dirichlet_weights(stats.n, self.config.dirichlet_count)

    def _sub_stats(self, x: Tensor, z: Tensor) -> Stats:
        k2 = 2 * self.k_
        return self._world.stats(grouped_stats(x, 2 * z, k2, self._sub_resp[:, 0])
                                 + grouped_stats(x, 2 * z + 1, k2, self._sub_resp[:, 1]))

    def _set_sub_params(self, stats: Stats, mask: Tensor) -> None:
        """Sub-cluster MAP parameters for the clusters in `mask` (weights within parent)."""
        mu, cov = map_params(stats, self.prior_)
        self._mix.set_sub(mu, cov, stats.n, mask, self.config.dirichlet_count)

    def _sub_m_step(self, x: Tensor, z: Tensor) -> None:
        self._set_sub_params(self._sub_stats(x, z),
                             torch.ones_like(self._mix.pi, dtype=torch.bool))
        side = self._sub_resp.argmax(1)
        hard = self._world.sum(torch.bincount(2 * z + side, minlength=2 * self.k_)).view(-1, 2)
        degenerate = hard.min(1).values == 0  # one sub-cluster lost every point: re-seed it
        if bool(degenerate.any()):
            self._init_subclusters(x, z, degenerate)

    def _init_subclusters(self, x: Tensor, z: Tensor, mask: Tensor) -> None:
        """1-D 2-means along each cluster's principal axis (clusters in `mask`)."""
        k = self.k_
        if not self._sub_ready:
            self._mix.mu_sub = self._mix.mu[:, None, :].repeat(1, 2, 1)
            self._mix.cov_sub = self._mix.cov[:, None].repeat(1, 2, 1, 1)
            self._mix.pi_sub = torch.full((k, 2), 0.5, dtype=torch.float64, device=x.device)
        hard = self._stats(x, z, k)
        mean, cov = map_params(hard, self.prior_)
        axes = torch.linalg.eigh(cov)[1][..., -1]  # principal direction per cluster
        side = two_means_1d(x, z, k, mean.to(x.dtype), axes.to(x.dtype), world=self._world)
        stats = self._stats(x, 2 * z + side, 2 * k)
        self._set_sub_params(stats, mask)
        rows = mask[z]
        self._sub_resp[rows] = F.one_hot(side[rows], 2).to(x.dtype)
        self._sub_ready = True

    # ------------------------------------------------------------------ moves
    def _split(self, x: Tensor, z: Tensor) -> dict[str, int]:
        cfg, k = self.config, self.k_
        side = self._sub_resp.argmax(1)
        sub_stats = self._stats(x, 2 * z + side, 2 * k)
        accept, _ = propose_splits(sub_stats, self.prior_, cfg.alpha, cfg.split_min_size,
                                   cfg.subcluster_min_size, self._generator)
        accept = self._world.broadcast(accept)  # rank 0's draws decide
        self._world.sync_generator(self._generator)
        split_idx = torch.nonzero(accept).squeeze(1)
        n_split = int(split_idx.numel())
        result = {"splits_proposed": k, "splits_accepted": n_split}
        if n_split == 0:
            return result
        dev = x.device
        k_new = k + n_split
        mix, source = self._mix.split(split_idx)
        child1 = torch.full((k,), -1, dtype=torch.long, device=dev)
        child1[split_idx] = torch.arange(k, k_new, device=dev)
        z_new = torch.where(accept[z] & (side == 1), child1[z], z)
        fresh = torch.zeros(k_new, dtype=torch.bool, device=dev)
        fresh[split_idx] = True
        fresh[k:] = True
        self._apply_surgery(x, mix, source, fresh, z_new, reseed=True)
        return result

    def _merge(self, x: Tensor, z: Tensor) -> dict[str, int]:
        cfg, k, dev = self.config, self.k_, x.device
        hard = self._stats(x, z, k)
        pairs, n_proposed = self._world.broadcast_object(  # rank 0's draws decide
            propose_merges(hard, self._mix.mu.float(), self.prior_, cfg.alpha,
                           cfg.merge_neighbours, self._generator))
        self._world.sync_generator(self._generator)
        result = {"merges_proposed": n_proposed, "merges_accepted": len(pairs)}
        if not pairs:
            return result
        pair_t = torch.as_tensor(pairs, device=dev)
        first, second = pair_t[:, 0], pair_t[:, 1]
        lp = log_marginal_likelihood(hard, self.prior_)
        keep = torch.ones(k, dtype=torch.bool, device=dev)
        keep[second] = False
        # merged cluster: at the first member's slot, net rows from the likelier member
        source_full = torch.arange(k, device=dev)
        source_full[first] = torch.where(lp[first] >= lp[second], first, second)
        soft = self._soft_stats if self._soft_stats is not None else hard
        union = soft[first] + soft[second]
        mu_m, cov_m = map_params(union, self.prior_)
        target = torch.arange(k, device=dev)
        target[second] = first
        z_merged = target[z]
        new_index = torch.cumsum(keep.long(), 0) - 1
        fresh_full = torch.zeros(k, dtype=torch.bool, device=dev)
        fresh_full[first] = True
        kept = torch.nonzero(keep).squeeze(1)
        # sub-responsibilities of merged points: which old cluster they came from
        merged_rows = fresh_full[z_merged]
        self._sub_resp[merged_rows] = F.one_hot((z[merged_rows] != z_merged[merged_rows]).long(),
                                                2).to(x.dtype)
        # the two old clusters become the merged cluster's sub-clusters
        mix = self._mix.merge(first, second, mu_m, cov_m, kept)
        self._apply_surgery(x, mix, source_full[kept], fresh_full[kept], new_index[z_merged],
                            reseed=False)
        return result

    def _prune_empty(self, x: Tensor, z: Tensor) -> int:
        """Drop clusters that no point is assigned to: a DP mixture has no empty components."""
        counts = self._world.sum(torch.bincount(z, minlength=self.k_))
        keep = counts > 0
        n_empty = int((~keep).sum())
        if n_empty == 0:
            return 0
        kept = torch.nonzero(keep).squeeze(1)
        new_index = torch.cumsum(keep.long(), 0) - 1
        self._apply_surgery(x, self._mix.take(kept), kept,
                            torch.zeros_like(kept, dtype=torch.bool), new_index[z], reseed=False)
        return n_empty

    def _apply_surgery(self, x: Tensor, mix: MixtureState, source: Tensor, fresh: Tensor,
                       z_new: Tensor, reseed: bool) -> None:
        """Install the new mixture (K_new clusters; `source`: the old cluster each comes
        from, `fresh`: new ones) and re-index nets and buffers; `reseed`: the fresh clusters
        get new sub-clusters (2-means), as split children do."""
        remap_cluster_net(self.cluster_net_, self._opt_cluster, source)
        remap_subcluster_nets(self.sub_nets_, self._opt_sub, source, fresh, self._generator)
        self._mix = mix
        self.k_ = mix.k
        self._soft_stats = None
        self._z = z_new
        self._nets = None  # new parameters: the training module is rebuilt
        if reseed and bool(fresh.any()):
            self._init_subclusters(x, z_new, fresh)

    # ------------------------------------------------------------------ outputs
    def _forward_chunks(self, x: Tensor, chunk: int = 65536) -> Tensor:
        self.cluster_net_.eval()
        with torch.no_grad():
            return torch.cat([self.cluster_net_(x[a:a + chunk]) for a in range(0, len(x), chunk)])

    def _argmax_chunks(self, x: Tensor, chunk: int = 65536) -> Tensor:
        """The net's most likely component per row, without holding N x K logits."""
        self.cluster_net_.eval()
        with torch.no_grad():
            return torch.cat([self.cluster_net_(x[a:a + chunk]).argmax(1)
                              for a in range(0, len(x), chunk)])

    def _inputs(self, X: Any) -> Tensor:
        if not self._fitted:
            raise NotFittedError("this DeepDPM instance is not fitted yet; call fit(X) first")
        x_np = check_array(X, "X", min_rows=1)
        if x_np.shape[1] != self.transform_.in_dim:
            raise InputError(f"X has {x_np.shape[1]} features, but DeepDPM is expecting "
                             f"{self.transform_.in_dim} features as input (the columns it "
                             "was fitted on)")
        return self.transform_(x_np)

    def _export(self, x: Tensor) -> None:
        self._dim = x.shape[1]
        self._set_clusters()
        self.labels_ = self._labels_of(self._world.gather_rows(self._argmax_chunks(x)))

    def _set_clusters(self, groups: Tensor | None = None) -> None:
        """Public mixture attributes; with `merge_modes`, components sharing a mode of the
        fitted density form one cluster (clustering/modes.py), described by the mean,
        covariance and weight of its components together (moment matching)."""
        if groups is None:
            mix = self._mix
            groups = (mode_clusters(mix.mu, mix.cov, mix.pi) if self.config.merge_modes
                      else torch.arange(self.k_, device=mix.mu.device))
        self.component_cluster_ = groups.to(self._mix.mu.device)
        self.n_components_ = self.k_
        self.n_clusters_ = int(groups.max()) + 1
        mean, cov, weight = self._mix.grouped(groups)
        self.means_, self.covariances_ = self.transform_.to_input_units(mean, cov)
        self.weights_ = weight.cpu().numpy()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str) -> None:
        """Everything a later `DeepDPM.load` (and `fit(resume=True)`) needs, atomically."""
        save_model(self, path)

    @classmethod
    def load(cls, path: str, device: str | None = None) -> DeepDPM:
        """A model saved with `save` (device: where to put it; None: the saved setting)."""
        return load_model(cls, path, device)


# scikit-learn reads an estimator's parameters from its __init__ signature: DeepDPMConfig's
# fields, each keyword-only with its default (one place for every default)
DeepDPM.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
       for f in fields(DeepDPMConfig)])
