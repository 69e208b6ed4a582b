"""DeepDPM as a scikit-learn estimator: parameters, fit, predict and the fitted mixture.

`fit` checks the input and the parameters, fits the input transform and the data prior,
draws the initial partition, then runs the epoch loop below; each epoch is
`Training.run_epoch` (clustering/training.py: E-step targets, mini-batch training of the
clustering and sub-cluster nets, M-steps, split/merge moves). At the end, components
that share a mode of the fitted density become one cluster (clustering/modes.py).
Saving and loading: clustering/persistence.py.

Under `torchrun` each rank fits its shard of X (clustering/distributed.py); K, the
parameters and the history are the same on every rank.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import fields
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from torch import Tensor

from clustering.config import CONFIG_KEYS, DeepDPMConfig
from clustering.distributed import World
from clustering.kmeans import nearest_centre
from clustering.metrics import evaluate
from clustering.modes import mode_clusters
from clustering.nets import ClusterNet, SubclusterNets
from clustering.persistence import load_model, restore_training, save_model
from clustering.prior import data_prior
from clustering.start import initial_partition
from clustering.training import Training, argmax_in_chunks, epoch_batch_size, logits_in_chunks
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
        self._training: Training | None = None
        self._fitted = False
        self._train_state: dict[str, Any] | None = None

    @property
    def config(self) -> DeepDPMConfig:
        """The parameters as one DeepDPMConfig (what the model reads)."""
        return DeepDPMConfig(**{key: getattr(self, key) for key in CONFIG_KEYS})

    # the fit's nets and K, read from its training state
    @property
    def cluster_net_(self) -> ClusterNet:
        return self._fitted_training().cluster_net

    @property
    def sub_nets_(self) -> SubclusterNets:
        return self._fitted_training().sub_nets

    @property
    def k_(self) -> int:
        return self._fitted_training().k

    def _fitted_training(self) -> Training:
        if self._training is None:
            raise AttributeError("this DeepDPM instance is not fitted yet")
        return self._training

    def fit(self, X: Any, y: Any = None, *, init_means: Any = None,
            on_epoch: EpochCallback | None = None, resume: bool = False) -> DeepDPM:
        """Infer K and the clustering of X (N x D). Labels `y` are used for metrics only.

        Under torchrun (a process group initialised), X and y are this rank's shard
        (near-equal shards, in rank order); `labels_` then covers every shard, in order."""
        cfg = self.config
        self._world = World.current()
        x_np, y, n_total, n_max = check_fit_inputs(
            X, y, self._world, lambda n_max: epoch_batch_size(cfg.batch_size, n_max))
        check_config(cfg, n_total, x_np.shape[1])
        self.device_ = self._world.device(resolve_device(cfg.device))
        threads = torch.get_num_threads()
        if self.device_.type == "cpu" and cfg.cpu_threads is not None:
            torch.set_num_threads(cfg.cpu_threads)
        try:
            x = (self._resume(x_np, n_total, n_max) if resume
                 else self._start(x_np, init_means, n_total, n_max))
            y_codes = None if y is None else np.unique(y, return_inverse=True)[1]
            self._train(x, y_codes, on_epoch)
            self._fitted = True
            self._export(x)
            if y_codes is not None:
                self.metrics_ = evaluate(y_codes, self.labels_)
        finally:
            torch.set_num_threads(threads)
        return self

    def _start(self, x_np: np.ndarray, init_means: Any, n_total: int, n_max: int) -> Tensor:
        """A new fit: input transform, data prior, initial partition, fresh nets."""
        cfg = self.config
        self.n_features_in_ = x_np.shape[1]
        self.transform_ = InputTransform(cfg.input_transform, cfg.whiten_dim).fit(
            x_np, self.device_, self._world)
        x = self.transform_.transform(x_np)
        generator = torch.Generator(device=self.device_).manual_seed(cfg.seed)
        self.prior_ = data_prior(x, cfg, self.transform_, self._world)
        training = Training(cfg, self.prior_, self._world, self.device_, generator,
                            n_total, n_max)
        if init_means is not None:
            centres = check_array(init_means, "init_means", min_rows=1)
            if centres.shape[1] != self.n_features_in_:
                raise InputError(f"init_means has {centres.shape[1]} columns, X has "
                                 f"{self.n_features_in_}")
            labels, _ = nearest_centre(x, self.transform_.transform(centres))
            k = centres.shape[0]
        else:
            labels = initial_partition(x, cfg.init_k, self.prior_, cfg.alpha, generator,
                                       cfg.kmeans_iters, cfg.init_search, self._world,
                                       training.data_generator)
            k = int(self._world.max(labels.max())) + 1
        training.begin(x, labels, k)
        self._training = training
        self.history_: list[EpochRecord] = []
        self.epoch_ = -1
        return x

    def _resume(self, x_np: np.ndarray, n_total: int, n_max: int) -> Tensor:
        """Continue a loaded model's run on the same X (the per-point buffers rebuilt)."""
        if self._train_state is None:
            raise InputError("resume=True needs a model loaded with DeepDPM.load")
        dim = x_np.shape[1]
        saved = self._train_state["transform"]
        fitted_dim = saved.get("in_dim") or self._train_state["dim"]
        if fitted_dim != dim:
            raise InputError(f"X has {dim} columns but the saved model was fitted on "
                             f"{fitted_dim}")
        restore_training(self, self._train_state)
        training = self._fitted_training()
        training.n_total, training.n_max = n_total, n_max
        x = self.transform_.transform(x_np)
        training.rebuild_buffers(x)
        training.set_data_generator(self.epoch_ + 1)
        return x

    def _train(self, x: Tensor, y_codes: np.ndarray | None,
               on_epoch: EpochCallback | None) -> None:
        """The epoch loop: run an epoch, record it (K in use, metrics when labels are
        given), report it; until max_epochs or convergence (`Training.end_epoch`)."""
        cfg, training = self.config, self._fitted_training()
        t0 = time.perf_counter()
        epochs: Any = range(self.epoch_ + 1, training.end_epoch)
        bar = None
        if cfg.verbose and self._world.is_main:
            from tqdm.auto import tqdm

            epochs = bar = tqdm(epochs, desc="DeepDPM", unit="epoch")
        for epoch in epochs:
            record = training.run_epoch(x, epoch)
            record["seconds"] = time.perf_counter() - t0
            last = epoch + 1 >= training.end_epoch
            sizes = training.cluster_sizes().cpu().numpy()
            record["k_used"] = int((sizes > 0).sum())
            if y_codes is not None and (epoch % cfg.eval_every == 0 or last):
                z_all = self._world.gather_rows(training.z).cpu().numpy()
                record.update({key: v for key, v in evaluate(y_codes, z_all).items()
                               if key != "k"})
            self.history_.append(record)
            self.epoch_ = epoch
            if bar is not None:
                bar.set_postfix(K=training.k, loss=f"{record['cluster_loss']:.3g}",
                                event=record["event"] or "-")
            if on_epoch is not None:
                on_epoch({**record, "sizes": sizes})
            if last:
                break
        if bar is not None:
            bar.close()
        self.n_iter_ = len(self.history_)
        self.converged_ = training.end_epoch < cfg.max_epochs

    def fit_predict(self, X: Any, y: Any = None, **kwargs: Any) -> np.ndarray:
        return self.fit(X, y, **kwargs).labels_

    def predict_proba(self, X: Any) -> np.ndarray:
        """Soft cluster assignments, N x n_clusters_ float32: the clustering net's
        component probabilities summed over the components of each cluster."""
        x = self._inputs(X)  # first: an unfitted model fails here, with a clear error
        prob = torch.softmax(logits_in_chunks(self.cluster_net_, x), dim=1)
        groups = self.component_cluster_.to(prob.device)
        out = prob.new_zeros(prob.shape[0], self.n_clusters_)
        return out.index_add_(1, groups, prob).cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Hard cluster labels (the cluster of the net's most likely component), int64."""
        x = self._inputs(X)
        return self._labels_of(argmax_in_chunks(self.cluster_net_, x))

    def _labels_of(self, component: Tensor) -> np.ndarray:
        groups = self.component_cluster_.to(component.device)
        return groups[component].cpu().numpy().astype(np.int64)

    # ------------------------------------------------------------------ outputs
    def _inputs(self, X: Any) -> Tensor:
        if not self._fitted:
            raise NotFittedError("this DeepDPM instance is not fitted yet; call fit(X) first")
        x_np = check_array(X, "X", min_rows=1)
        if x_np.shape[1] != self.transform_.in_dim:
            raise InputError(f"X has {x_np.shape[1]} features, but DeepDPM is expecting "
                             f"{self.transform_.in_dim} features as input (the columns it "
                             "was fitted on)")
        return self.transform_.transform(x_np)

    def _export(self, x: Tensor) -> None:
        self._dim = x.shape[1]
        self._set_clusters()
        component = argmax_in_chunks(self.cluster_net_, x)
        self.labels_ = self._labels_of(self._world.gather_rows(component))

    def _set_clusters(self, groups: Tensor | None = None) -> None:
        """Public mixture attributes; with `merge_modes`, components sharing a mode of the
        fitted density form one cluster (clustering/modes.py), described by the mean,
        covariance and weight of its components together (moment matching)."""
        mix = self._fitted_training().mix
        if groups is None:
            groups = (mode_clusters(mix.mu, mix.cov, mix.pi) if self.config.merge_modes
                      else torch.arange(mix.k, device=mix.mu.device))
        self.component_cluster_ = groups.to(mix.mu.device)
        self.n_components_ = mix.k
        self.n_clusters_ = int(groups.max()) + 1
        mean, cov, weight = mix.grouped(groups)
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
