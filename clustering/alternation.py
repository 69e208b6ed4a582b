"""AE alternation: cluster the codes of an autoencoder with DeepDPM, pull the codes towards
their clusters, cluster again (the paper's best ImageNet-50 results came from this).

Alternation t = 0 clusters the pretrained AE's codes (k-means++ init with `init_k`).
Alternation t >= 1 first trains the AE for `ae_epochs` on
    lambda_ * reconstruction + beta / 2 * ||z_i - c_{a_i}||^2
with the centres c held fixed (cluster means of the previous codes under the previous
labels; a_i = nearest centre ("hard") or the previous clustering net's soft assignment
("soft"); clustering/pull.py), then reruns DeepDPM on the new codes, warm-started from the
means of the new codes under the previous labels (K carried over). DeepDPM's prior is
always derived from the codes being clustered (the authors reset it from the centres; we
do not).

Settings: `clustering.config.AlternationConfig`; the files a run writes and how a rerun
resumes: clustering/alternation_files.py.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clustering.alternation_files import (
    FORMAT,
    RunFolder,
    data_fingerprint,
    pretrain_manifest,
    read_json,
    run_manifest,
)
from clustering.autoencoder import (
    AutoEncoder,
    TrainSettings,
    ae_state,
    encode,
    load_ae_state,
    train_autoencoder,
)
from clustering.config import as_dict, make_alternation_config, make_cluster_params
from clustering.metrics import evaluate
from clustering.model import DeepDPM
from clustering.pull import cluster_means, code_unit, hard_pull, soft_means, soft_pull
from clustering.transform import InputTransform
from clustering.validation import check_array, check_labels
from data.devices import resolve_device
from data.errors import ConfigError, InputError
from data.files import save_json, save_npy, save_torch
from data.records import EpochCallback, EpochRecord


@dataclass
class _Previous:
    """What alternation t needs from alternation t - 1."""

    model: DeepDPM
    labels: Tensor  # on the AE device


# ---------------------------------------------------------------------- the stage
class AEAlternation:
    """Autoencoder <-> DeepDPM alternation with saved, resumable state.

    `AEAlternation(alt_cfg, cluster_cfg).fit(X, y_eval, out_dir=dir)`; afterwards
    `labels_`, `n_clusters_`, `history_` (one dict per alternation), `metrics_` (when
    labels were given), `codes_`, `model_` (DeepDPM), `autoencoder_`. New data:
    `transform(X)` (codes) and `predict(X)` (labels); `AEAlternation.load(out_dir)`.
    """

    def __init__(self, alt_cfg: Any = None, cluster_cfg: Any = None):
        self.config = make_alternation_config(alt_cfg)
        self.cluster_params = make_cluster_params(
            {**as_dict(cluster_cfg, "clustering config"), **self.config.cluster_overrides})
        self._fitted = False

    # ------------------------------------------------------------------ public API
    def fit(self, X: Any, y_eval: Any = None, out_dir: str | Path | None = None,
            on_epoch: EpochCallback | None = None) -> AEAlternation:
        """Pretrain (or reuse) the AE, then run the alternations; resumes from out_dir."""
        cfg = self.config
        x_np = check_array(X, "X").astype(np.float32, copy=False)
        n, dim = x_np.shape
        if cfg.latent_dim >= dim:
            raise ConfigError(f"alternate.latent_dim ({cfg.latent_dim}) must be smaller than "
                              f"the input dimension ({dim})")
        y = check_labels(y_eval, n) if y_eval is not None else None
        self.device_ = resolve_device(cfg.device)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self._files = RunFolder(self.out_dir)
        emit = on_epoch or (lambda record: None)
        fingerprint = data_fingerprint(x_np)
        ae, scaler, x, reused = self._pretrained(x_np, fingerprint, emit)
        self.autoencoder_, self.scaler_ = ae, scaler
        start, prev = self._resume_state(fingerprint, reused, ae)
        for t in range(start, cfg.n_alternations):
            prev = self._alternation(t, ae, x, y, prev, emit)
        assert prev is not None  # n_alternations >= 1
        self._finish(x, y, prev)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Latent codes (float32 N x latent_dim) of new data under the trained encoder."""
        self._check_fitted()
        x_np = check_array(X, "X", min_rows=1).astype(np.float32, copy=False)
        if x_np.shape[1] != self.autoencoder_.in_dim:
            raise InputError(f"X has {x_np.shape[1]} columns but the encoder was trained on "
                             f"{self.autoencoder_.in_dim}")
        x = self.scaler_.apply(x_np)
        return encode(self.autoencoder_, x).cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Cluster labels of new data: encode, then the final DeepDPM's predict."""
        codes = self.transform(X)
        return self.model_.predict(codes)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Soft assignments (N x K) of new data by the final clustering net."""
        codes = self.transform(X)
        return self.model_.predict_proba(codes)

    @classmethod
    def load(cls, out_dir: str | Path, device: str | None = None) -> AEAlternation:
        """Rebuild a fitted stage from the final files of `fit` in out_dir."""
        out = Path(out_dir)
        meta_path = out / "alternation.json"
        for name in ("alternation.json", "encoder.pt", "deepdpm.pt", "labels.npy"):
            if not (out / name).is_file():
                raise InputError(f"{out}: no {name}; not a finished AE alternation output")
        meta = read_json(meta_path)
        if meta.get("format") != FORMAT:
            raise InputError(f"{meta_path}: not an AE alternation output (format)")
        alt = {**meta["config"], "device": device}
        self = cls(alt, meta["cluster_config"])
        self.device_ = resolve_device(device)
        self.out_dir = out
        self._files = RunFolder(out)
        self.autoencoder_, self.scaler_, _ = load_ae_state(out / "encoder.pt", self.device_)
        self.model_ = DeepDPM.load(str(out / "deepdpm.pt"), device=device)
        self.labels_ = np.load(out / "labels.npy")
        self.n_clusters_ = int(meta["n_clusters"])
        self.history_ = list(meta["history"])
        if meta.get("metrics") is not None:
            self.metrics_ = meta["metrics"]
        self._fitted = True
        return self

    # ------------------------------------------------------------------ pretraining
    def _new_ae(self, dim: int) -> AutoEncoder:
        """Fresh AE seeded from `seed` without touching the global RNG."""
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            ae = AutoEncoder(dim, cfg.hidden_dims, cfg.latent_dim)
        return ae.to(self.device_)

    def _pretrained(self, x_np: np.ndarray, fingerprint: dict[str, Any],
                    emit: EpochCallback) -> tuple[AutoEncoder, InputTransform, Tensor, bool]:
        """Load out_dir/ae_pretrained.pt when usable, else pretrain and save it; also the
        transformed input (computed once, used by every AE block)."""
        cfg, path = self.config, self._files.path("ae_pretrained.pt")
        if path is not None and path.is_file() and cfg.resume:
            ae, scaler, state = load_ae_state(path, self.device_)
            self._check_pretrained(path, ae, scaler, state, x_np.shape[1], fingerprint)
            return ae, scaler, scaler.apply(x_np), True
        scaler = InputTransform(cfg.input_transform).fit(x_np, self.device_)
        ae = self._new_ae(x_np.shape[1])
        gen = torch.Generator().manual_seed(cfg.seed)
        settings = TrainSettings(cfg.pretrain_epochs, cfg.pretrain_lr, cfg.batch_size)
        x = scaler.apply(x_np)
        log = train_autoencoder(
            ae, x, settings, gen,
            on_epoch=lambda rec: emit({"stage": "pretrain", "alternation": -1, **rec}))
        self._pretrain_loss = log[-1]["recon_loss"]
        if path is not None:
            save_torch(path, ae_state(ae, scaler, pretrain=pretrain_manifest(cfg, fingerprint),
                                      recon_loss=self._pretrain_loss))
        return ae, scaler, x, False

    def _check_pretrained(self, path: Path, ae: AutoEncoder, scaler: InputTransform,
                          state: dict[str, Any], dim: int, fingerprint: dict[str, Any]) -> None:
        """Reused weights must fit the settings and (when recorded) the data."""
        cfg = self.config
        want = {"in_dim": dim, "hidden": list(cfg.hidden_dims), "latent_dim": cfg.latent_dim,
                "input_transform": cfg.input_transform}
        have = {**ae.arch(), "input_transform": scaler.kind}
        if want != have:
            diff = {k: (have[k], want[k]) for k in want if want[k] != have[k]}
            raise ConfigError(f"{path} was trained with other settings "
                              f"(saved, requested: {diff}); delete it or use another out_dir")
        recorded = state.get("pretrain", {}).get("data")
        if recorded is not None and recorded != fingerprint:
            raise InputError(f"{path} was pretrained on other data ({recorded.get('n')} x "
                             f"{recorded.get('d')}, sha256 {str(recorded.get('sha256'))[:10]}); "
                             "delete it or use another out_dir")
        self._pretrain_loss = float(state.get("recon_loss", float("nan")))

    # ------------------------------------------------------------------ resume
    def _resume_state(self, fingerprint: dict[str, Any], reused: bool,
                      ae: AutoEncoder) -> tuple[int, _Previous | None]:
        """First alternation to run and the state it needs; loads finished ones' outputs
        (which ones a rerun may reuse: `RunFolder.reusable`)."""
        cfg = self.config
        done = self._files.reusable(run_manifest(cfg, self.cluster_params, fingerprint),
                                    cfg.resume and reused, cfg.n_alternations)
        self._reusable_block = done  # alternation whose saved encoder may be reused
        self.history_: list[dict[str, Any]] = self._files.summaries(done or 0)
        if not done:
            return 0, None
        alt_dir = self._files.path(f"alt_{done - 1}")
        saved, _, _ = load_ae_state(alt_dir / "encoder.pt", self.device_)
        ae.load_state_dict(saved.state_dict())
        model = DeepDPM.load(str(alt_dir / "deepdpm.pt"), device=self.cluster_params["device"])
        labels = torch.as_tensor(np.load(alt_dir / "labels.npy"), device=self.device_)
        return done, _Previous(model, labels)

    # ------------------------------------------------------------------ one alternation
    def _alternation(self, t: int, ae: AutoEncoder, x: Tensor, y: np.ndarray | None,
                     prev: _Previous | None, emit: EpochCallback) -> _Previous:
        """AE block (t >= 1) then DeepDPM on the codes; saves alt_<t>/ and history."""
        cfg = self.config
        alt_dir = self._files.path(f"alt_{t}")
        t0 = time.perf_counter()
        ae_log = self._ae_block(t, ae, x, prev, emit) if t > 0 else []
        ae_seconds = time.perf_counter() - t0
        if t == 0 and alt_dir is not None:
            save_torch(alt_dir / "encoder.pt", ae_state(ae, self.scaler_, after_alternation=-1))
        codes = encode(ae, x)
        params = self._cluster_params_for(t)
        init_means = None
        if t > 0 and cfg.warm_start and prev is not None:
            init_means = cluster_means(codes, prev.labels).cpu().numpy()

        def cluster_epoch(record: EpochRecord) -> None:
            emit({**record, "stage": "cluster", "alternation": t})

        t1 = time.perf_counter()
        model = DeepDPM(**params).fit(codes.cpu().numpy(), y, init_means=init_means,
                                      on_epoch=cluster_epoch)
        labels = np.asarray(model.labels_, dtype=np.int64)
        summary: EpochRecord = {
            "alternation": t, "k": int(model.n_clusters_), "k_used": int(len(np.unique(labels))),
            "init_k": int(params["init_k"] if init_means is None else len(init_means)),
            "prior_sigma_scale": float(params["prior_sigma_scale"]),
            **({k: v for k, v in evaluate(y, labels).items() if k != "k"} if y is not None
               else {}),
            "recon_loss": ae_log[-1]["recon_loss"] if ae_log else self._pretrain_loss,
            "pull_loss": ae_log[-1]["pull_loss"] if ae_log else float("nan"),
            "ae_seconds": round(ae_seconds, 3),
            "cluster_seconds": round(time.perf_counter() - t1, 3),
        }
        self._files.save_alternation(t, labels, model,
                                     codes.cpu().numpy() if cfg.save_codes else None, summary)
        self.history_.append(summary)
        self._files.save_history(self.history_)
        emit({**summary, "stage": "alternation"})
        return _Previous(model, torch.as_tensor(labels, device=self.device_))

    def _cluster_params_for(self, t: int) -> dict[str, Any]:
        """DeepDPM settings of run t: its own seed, and the authors' prior_sigma_scale / t."""
        params = dict(self.cluster_params)
        params["seed"] = int(params["seed"]) + t
        if t > 0 and self.config.prior_sigma_scale_step:
            params["prior_sigma_scale"] = params["prior_sigma_scale"] / t
        return params

    def _ae_block(self, t: int, ae: AutoEncoder, x: Tensor, prev: _Previous | None,
                  emit: EpochCallback) -> list[dict[str, float]]:
        """Train the AE towards the previous clustering, or reload it if already done."""
        cfg = self.config
        enc_path = self._files.path(f"alt_{t}", "encoder.pt")
        if t == self._reusable_block and enc_path is not None and enc_path.is_file():
            saved, _, state = load_ae_state(enc_path, self.device_)
            if state.get("after_alternation") == t - 1:
                ae.load_state_dict(saved.state_dict())
                return list(state.get("log", []))
        if prev is None:
            raise InputError(f"alternation {t} needs the clustering of alternation {t - 1}")
        codes = encode(ae, x)
        unit = code_unit(codes)
        if cfg.assignment == "hard":
            pull = hard_pull(cluster_means(codes, prev.labels), unit)
        else:
            resp = torch.as_tensor(prev.model.predict_proba(codes.cpu().numpy()),
                                   device=x.device, dtype=codes.dtype)
            pull = soft_pull(soft_means(codes, resp), resp, unit)
        settings = TrainSettings(cfg.ae_epochs, cfg.lr, cfg.batch_size, cfg.weight_decay,
                                 recon_weight=cfg.lambda_, pull_weight=cfg.beta / 2)
        gen = torch.Generator().manual_seed(cfg.seed + 1000 * t)
        log = train_autoencoder(
            ae, x, settings, gen, extra_loss=pull,
            on_epoch=lambda rec: emit({"stage": "ae", "alternation": t, **rec}))
        if enc_path is not None:
            save_torch(enc_path, ae_state(ae, self.scaler_, after_alternation=t - 1, log=log))
        return log

    # ------------------------------------------------------------------ outputs
    def _finish(self, x: Tensor, y: np.ndarray | None, last: _Previous) -> None:
        """Final attributes and files (encoder, DeepDPM, labels, codes, summary)."""
        self.model_ = last.model
        self.labels_ = last.labels.cpu().numpy().astype(np.int64)
        self.n_clusters_ = int(last.model.n_clusters_)
        self.codes_ = encode(self.autoencoder_, x).cpu().numpy()
        self.metrics_ = evaluate(y, self.labels_) if y is not None else None
        self._fitted = True
        if self.out_dir is None:
            return
        out = self.out_dir
        self._files.save_history(self.history_)
        save_torch(out / "encoder.pt", ae_state(self.autoencoder_, self.scaler_))
        last.model.save(str(out / "deepdpm.pt"))
        save_npy(out / "labels.npy", self.labels_)
        if self.config.save_codes:
            save_npy(out / "codes.npy", self.codes_)
        save_json(out / "alternation.json", {
            "format": FORMAT, "config": asdict(self.config),
            "cluster_config": self.cluster_params, "n_clusters": self.n_clusters_,
            "metrics": self.metrics_, "history": self.history_})

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise InputError("this AEAlternation is not fitted yet; call fit(X) first")
