"""AE alternation: cluster the codes of an autoencoder with DeepDPM, pull the codes towards
their clusters, cluster again (spec section 5; the paper's best ImageNet-50 results).

Alternation t = 0 clusters the pretrained AE's codes (k-means++ init with `init_k`).
Alternation t >= 1 first trains the AE for `ae_epochs` on
    lambda_ * reconstruction + beta / 2 * ||z_i - c_{a_i}||^2
with the centres c held fixed (cluster means of the previous codes under the previous
labels; a_i = nearest centre ("hard") or the previous clustering net's soft assignment
("soft")), then reruns DeepDPM on the new codes, warm-started from the means of the new
codes under the previous labels (K carried over). DeepDPM's prior is always derived
from the codes being clustered (the authors reset it from the centres; we do not).

Files under `out_dir` (all written atomically):
  ae_pretrained.pt            AE after reconstruction pretraining (reused when present)
  alternation_run.json        settings + data fingerprint of the run (resume check)
  alt_<t>/encoder.pt          AE whose codes alternation t clusters (written before DeepDPM)
  alt_<t>/codes.npy, labels.npy, deepdpm.pt, summary.json (summary = "t is done")
  history.csv                 one row per finished alternation (K, metrics, losses, times)
  encoder.pt, deepdpm.pt, labels.npy, codes.npy, alternation.json   final outputs
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clustering.autoencoder import (
    INPUT_TRANSFORMS,
    AutoEncoder,
    InputScaler,
    TrainSettings,
    ae_state,
    encode,
    load_ae_state,
    train_autoencoder,
)
from clustering.config import DeepDPMConfig
from clustering.metrics import evaluate
from clustering.model import DeepDPM
from clustering.validation import check_array, check_labels
from data.devices import resolve_device
from data.errors import ConfigError, InputError
from data.files import save_json, save_npy, save_text, save_torch

EpochCallback = Callable[[dict[str, Any]], None]
FORMAT = "deepdpm-alternation-v1"
ASSIGNMENTS = ("hard", "soft")


@dataclass
class AlternationConfig:
    """Settings of the AE alternation stage (YAML section `alternate`)."""

    enabled: bool = False  # the pipeline runs the stage only when true
    # --- autoencoder
    hidden_dims: list[int] = field(default_factory=lambda: [500, 500, 2000])
    latent_dim: int = 10
    input_transform: str = "scale"  # none | normalize | scale | standardize (AE input)
    batch_size: int = 256  # authors: 128
    pretrain_epochs: int = 50
    pretrain_lr: float = 1e-3
    # --- alternation
    n_alternations: int = 3  # DeepDPM runs (authors' number_of_ae_alternations)
    ae_epochs: int = 100  # AE epochs between two DeepDPM runs (authors' `epoch`)
    lr: float = 2e-3  # Adam lr of the AE during alternations (authors' --lr)
    weight_decay: float = 0.0  # authors 5e-4 with a batch-sum loss, ~4e-6 for our batch mean
    lambda_: float = 0.005  # reconstruction weight (authors' --lambda_)
    beta: float = 1.0  # pull-to-centre weight, applied as beta / 2 (authors' --beta)
    assignment: str = "hard"  # hard: nearest fixed centre | soft: clustering-net posteriors
    warm_start: bool = True  # DeepDPM t >= 1 starts from the previous labels' means and K
    prior_sigma_scale_step: bool = True  # DeepDPM t >= 1 uses prior_sigma_scale / t
    # DeepDPM settings for the codes over the `cluster` section (e.g. nu: 12 for 10-D codes)
    cluster_overrides: dict[str, Any] = field(default_factory=dict)
    # --- run
    resume: bool = True  # continue from the state saved in out_dir
    save_codes: bool = True  # keep alt_<t>/codes.npy
    seed: int = 0
    device: str | None = None  # None -> cuda if available


ALTERNATION_KEYS = tuple(f.name for f in fields(AlternationConfig))
# Keys whose change invalidates the pretrained AE / the alternation state (for resume).
PRETRAIN_KEYS = ("hidden_dims", "latent_dim", "input_transform", "batch_size",
                 "pretrain_epochs", "pretrain_lr", "seed")
ALTERNATE_KEYS = ("ae_epochs", "lr", "weight_decay", "lambda_", "beta", "assignment",
                  "warm_start", "prior_sigma_scale_step")  # cluster_overrides: via cluster_config
CLUSTER_RUNTIME_KEYS = ("device", "verbose", "eval_every")


# ---------------------------------------------------------------------- configuration
def _as_dict(cfg: Any, name: str) -> dict[str, Any]:
    """Dataclass, mapping or omegaconf DictConfig -> plain dict."""
    if cfg is None:
        return {}
    if hasattr(cfg, "__dataclass_fields__"):
        return asdict(cfg)
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise ConfigError(f"{name} must be a dataclass or a mapping, got {type(cfg).__name__}")


def make_alternation_config(cfg: Any = None) -> AlternationConfig:
    """AlternationConfig from a dataclass/mapping; unknown keys -> ConfigError."""
    values = _as_dict(cfg, "alternation config")
    unknown = sorted(set(values) - set(ALTERNATION_KEYS))
    if unknown:
        raise ConfigError(f"alternate: unknown key(s) {unknown}; valid keys: "
                          f"{', '.join(ALTERNATION_KEYS)}")
    out = AlternationConfig(**values)
    out.hidden_dims = [int(h) for h in out.hidden_dims]
    out.cluster_overrides = _as_dict(out.cluster_overrides, "alternate.cluster_overrides")
    validate_alternation_config(out)
    return out


def validate_alternation_config(cfg: AlternationConfig) -> None:
    """Data-independent checks, each failing with one line naming the key."""

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(f"alternate.{msg}")

    need(all(h >= 1 for h in cfg.hidden_dims),
         f"hidden_dims must all be >= 1, got {cfg.hidden_dims}")
    need(cfg.latent_dim >= 1, f"latent_dim must be >= 1, got {cfg.latent_dim}")
    need(cfg.input_transform in INPUT_TRANSFORMS,
         f"input_transform must be one of {INPUT_TRANSFORMS}, got {cfg.input_transform!r}")
    need(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    need(cfg.pretrain_epochs >= 1, f"pretrain_epochs must be >= 1, got {cfg.pretrain_epochs}")
    need(cfg.ae_epochs >= 1, f"ae_epochs must be >= 1, got {cfg.ae_epochs}")
    need(cfg.n_alternations >= 1, f"n_alternations must be >= 1, got {cfg.n_alternations}")
    need(cfg.pretrain_lr > 0, f"pretrain_lr must be > 0, got {cfg.pretrain_lr}")
    need(cfg.lr > 0, f"lr must be > 0, got {cfg.lr}")
    need(cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}")
    need(cfg.lambda_ >= 0, f"lambda_ must be >= 0, got {cfg.lambda_}")
    need(cfg.beta >= 0, f"beta must be >= 0, got {cfg.beta}")
    need(cfg.lambda_ + cfg.beta > 0, "lambda_ and beta are both 0: the AE would not train")
    need(cfg.assignment in ASSIGNMENTS,
         f"assignment must be one of {ASSIGNMENTS}, got {cfg.assignment!r}")


def make_cluster_params(cfg: Any = None) -> dict[str, Any]:
    """DeepDPM keyword arguments; unknown keys -> ConfigError."""
    values = _as_dict(cfg, "clustering config")
    valid = {f.name for f in fields(DeepDPMConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ConfigError(f"clustering (cluster section or alternate.cluster_overrides): "
                          f"unknown key(s) {unknown}; valid keys: "
                          f"{', '.join(sorted(valid))}")
    return asdict(DeepDPMConfig(**values))


# ---------------------------------------------------------------------- small helpers
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


def hard_pull(centres: Tensor, unit: float = 1.0) -> Callable[[Tensor, Tensor], Tensor]:
    """Loss ||z_i - c_{a_i}||^2 / unit with a_i the nearest fixed centre (authors' min_dist)."""

    def loss(z: Tensor, idx: Tensor) -> Tensor:
        with torch.no_grad():
            a = squared_distances(z, centres).argmin(1)
        return (z - centres[a]).pow(2).sum(1).mean() / unit

    return loss


def soft_pull(centres: Tensor, resp: Tensor,
              unit: float = 1.0) -> Callable[[Tensor, Tensor], Tensor]:
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


def data_fingerprint(x: np.ndarray) -> dict[str, Any]:
    """Shape and SHA-1 of the float32 input, so a resume never mixes data sets."""
    digest = hashlib.sha1(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()
    return {"n": int(x.shape[0]), "d": int(x.shape[1]), "sha1": digest}


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _csv_text(rows: list[dict[str, Any]]) -> str:
    """CSV with the union of keys, first-seen order."""
    cols: list[str] = []
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


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
            {**_as_dict(cluster_cfg, "clustering config"), **self.config.cluster_overrides})
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
        emit = on_epoch or (lambda record: None)
        fingerprint = data_fingerprint(x_np)
        x_raw = torch.as_tensor(x_np, device=self.device_)

        ae, scaler, reused = self._pretrained(x_raw, fingerprint, emit)
        self.autoencoder_, self.scaler_ = ae, scaler
        x = scaler(x_raw)
        del x_raw
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
        x = self.scaler_(torch.as_tensor(x_np, device=self.device_))
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
        meta = _json(meta_path)
        if meta.get("format") != FORMAT:
            raise InputError(f"{meta_path}: not an AE alternation output (format)")
        alt = {**meta["config"], "device": device}
        self = cls(alt, meta["cluster_config"])
        self.device_ = resolve_device(device)
        self.out_dir = out
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
    def _path(self, *parts: str) -> Path | None:
        return None if self.out_dir is None else self.out_dir.joinpath(*parts)

    def _new_ae(self, dim: int) -> AutoEncoder:
        """Fresh AE seeded from `seed` without touching the global RNG."""
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            ae = AutoEncoder(dim, cfg.hidden_dims, cfg.latent_dim)
        return ae.to(self.device_)

    def _pretrain_meta(self, fingerprint: dict[str, Any]) -> dict[str, Any]:
        keys = asdict(self.config)
        return {"data": fingerprint, "settings": {k: keys[k] for k in PRETRAIN_KEYS}}

    def _pretrained(self, x_raw: Tensor, fingerprint: dict[str, Any],
                    emit: EpochCallback) -> tuple[AutoEncoder, InputScaler, bool]:
        """Load out_dir/ae_pretrained.pt when usable, else pretrain and save it."""
        cfg, path = self.config, self._path("ae_pretrained.pt")
        if path is not None and path.is_file() and cfg.resume:
            ae, scaler, state = load_ae_state(path, self.device_)
            self._check_pretrained(path, ae, scaler, state, x_raw.shape[1], fingerprint)
            return ae, scaler, True
        scaler = InputScaler(cfg.input_transform).fit(x_raw)
        ae = self._new_ae(x_raw.shape[1])
        gen = torch.Generator().manual_seed(cfg.seed)
        settings = TrainSettings(cfg.pretrain_epochs, cfg.pretrain_lr, cfg.batch_size)
        log = train_autoencoder(
            ae, scaler(x_raw), settings, gen,
            on_epoch=lambda e, rec: emit({"stage": "pretrain", "alternation": -1,
                                          "epoch": e, **rec}))
        self._pretrain_loss = log[-1]["recon_loss"]
        if path is not None:
            save_torch(path, ae_state(ae, scaler, pretrain=self._pretrain_meta(fingerprint),
                                      recon_loss=self._pretrain_loss))
        return ae, scaler, False

    def _check_pretrained(self, path: Path, ae: AutoEncoder, scaler: InputScaler,
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
            raise InputError(f"{path} was pretrained on other data ({recorded['n']} x "
                             f"{recorded['d']}, sha1 {recorded['sha1'][:10]}); delete it or "
                             "use another out_dir")
        self._pretrain_loss = float(state.get("recon_loss", float("nan")))

    # ------------------------------------------------------------------ resume
    def _run_manifest(self, fingerprint: dict[str, Any]) -> dict[str, Any]:
        keys = asdict(self.config)
        cluster = {k: v for k, v in self.cluster_params.items() if k not in CLUSTER_RUNTIME_KEYS}
        return {"format": FORMAT, "data": fingerprint,
                "settings": {k: keys[k] for k in PRETRAIN_KEYS + ALTERNATE_KEYS},
                "cluster_config": cluster}

    def _resume_state(self, fingerprint: dict[str, Any], reused: bool,
                      ae: AutoEncoder) -> tuple[int, _Previous | None]:
        """First alternation to run and the state it needs; loads finished ones' outputs.

        Saved alternations are reused only when the pretrained AE was reused and the run
        settings and data are unchanged; otherwise the alternations restart from 0.
        """
        self.history_: list[dict[str, Any]] = []
        self._reusable_block: int | None = None
        manifest = self._run_manifest(fingerprint)
        path = self._path("alternation_run.json")
        if path is None:
            return 0, None
        old = _json(path) if path.is_file() else None
        save_json(path, manifest)
        if not (self.config.resume and reused and old is not None):
            return 0, None
        if old != manifest:
            changed = sorted(k for sec in ("settings", "cluster_config")
                             for k in set(old.get(sec, {})) | set(manifest[sec])
                             if old.get(sec, {}).get(k) != manifest[sec].get(k))
            warnings.warn(f"{self.out_dir}: settings changed ({changed}); keeping the "
                          "pretrained AE and restarting the alternations", stacklevel=3)
            return 0, None
        done = -1
        while done + 1 < self.config.n_alternations and \
                self._path(f"alt_{done + 1}", "summary.json").is_file():
            done += 1
        self._reusable_block = done + 1
        if done < 0:
            return 0, None
        for t in range(done + 1):
            self.history_.append(_json(self._path(f"alt_{t}", "summary.json")))
        alt_dir = self._path(f"alt_{done}")
        saved, _, _ = load_ae_state(alt_dir / "encoder.pt", self.device_)
        ae.load_state_dict(saved.state_dict())
        model = DeepDPM.load(str(alt_dir / "deepdpm.pt"), device=self.cluster_params["device"])
        labels = torch.as_tensor(np.load(alt_dir / "labels.npy"), device=self.device_)
        return done + 1, _Previous(model, labels)

    # ------------------------------------------------------------------ one alternation
    def _alternation(self, t: int, ae: AutoEncoder, x: Tensor, y: np.ndarray | None,
                     prev: _Previous | None, emit: EpochCallback) -> _Previous:
        """AE block (t >= 1) then DeepDPM on the codes; saves alt_<t>/ and history."""
        cfg = self.config
        alt_dir = self._path(f"alt_{t}")
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

        def cluster_epoch(record: dict[str, Any]) -> None:
            emit({**record, "stage": "cluster", "alternation": t})

        t1 = time.perf_counter()
        model = DeepDPM(**params).fit(codes.cpu().numpy(), y, init_means=init_means,
                                      on_epoch=cluster_epoch)
        labels = np.asarray(model.labels_, dtype=np.int64)
        summary = {
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
        if alt_dir is not None:
            save_npy(alt_dir / "labels.npy", labels)
            model.save(str(alt_dir / "deepdpm.pt"))
            if cfg.save_codes:
                save_npy(alt_dir / "codes.npy", codes.cpu().numpy())
            save_json(alt_dir / "summary.json", summary)  # last: marks t as done
        self.history_.append(summary)
        if self.out_dir is not None:
            save_text(self.out_dir / "history.csv", _csv_text(self.history_))
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
        enc_path = self._path(f"alt_{t}", "encoder.pt")
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
            on_epoch=lambda e, rec: emit({"stage": "ae", "alternation": t, "epoch": e, **rec}))
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
        save_text(out / "history.csv", _csv_text(self.history_))
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
