"""Every DeepDPM hyper-parameter in one dataclass: the constructor's keywords, the YAML
schema (`configs/clustering.yaml`) and the command line's `key=value` overrides. Beside
it, the AE alternation's settings (`AlternationConfig`, YAML section `alternate`).

Nothing here imports torch: reading and checking a config is instant, and a bad key fails
before any model is built.

Defaults differ from the authors' code where theirs is wrong or slow (README, "Fixed
defects of the reference code"); each such default is commented.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from data.errors import ConfigError


@dataclass
class DeepDPMConfig:
    # --- model size and initialisation
    init_k: int = 1  # K_init: clusters of the k-means++ initialisation
    max_epochs: int = 200  # authors: 500 with a 30-epoch split/merge period; ours is denser
    # authors: 128. An upper bound: smaller data sets use batches of N/20 so that every
    # epoch still has 20 optimiser steps
    batch_size: int = 512
    cluster_hidden: list[int] | None = None  # cluster-net hidden widths; None -> [50]
    subcluster_hidden: int = 50  # hidden width of each per-cluster 2-way net
    cluster_lr: float = 1e-3
    subcluster_lr: float = 5e-3
    # none | normalize (row L2, the authors' default) | standardize | whiten (PCA whitening)
    input_transform: str = "none"
    whiten_dim: int | None = None  # whiten: keep this many principal components (None: all)
    kmeans_iters: int = 50  # cap on the k-means++ Lloyd iterations at init
    # start from the candidate partition with the highest log joint: k-means at K = init_k
    # and K = 1, 2, 4, ... sqrt(n), and the components of the mutual 5/10/20-NN graphs
    # (clustering/start.py). Splits and merges are local moves: they cannot cross the
    # barriers high-dimensional or thin clusters put between K = 1 and the truth
    init_search: bool = True
    # --- NIW prior and Dirichlet process
    alpha: float = 10.0  # DP concentration; enters the Hastings ratios only
    kappa: float = 1e-4
    nu: float | None = None  # None -> D + 2; must be > D - 1
    # data_cov (scale * covariance of X) | data_var (scale * mean variance * I) |
    # isotropic (scale * I) | data_std (scale * diag(std)). data_cov with scale 1 (the
    # prior scikit-learn's BayesianGaussianMixture uses) expects clusters no wider than the
    # data; it does not depend on the data's units or orientation (docs/benchmarks.md)
    prior_sigma_choice: str = "data_cov"
    prior_sigma_scale: float = 1.0
    prior_mu: str = "data_mean"  # data_mean | zero
    dirichlet_count: float = 1.0  # Dirichlet posterior on counts: (r_k + a) / (N + K a)
    # --- schedule (epochs)
    start_m_step: int = 5  # first epoch whose end runs an M-step (authors: 25)
    start_subclustering: int = 10  # sub-nets train from here (authors: 45)
    start_split_merge: int = 15  # first split step (authors: 55)
    split_merge_every: int = 5  # epochs between alternating split and merge steps (authors: 30)
    freeze_after_step: int = 2  # epochs without M-step after a split/merge (authors: 5)
    stop_split_merge_before_end: int = 20  # no split/merge in the last epochs
    # convergence, as scikit-learn's mixtures: once `n_moves_no_change` split/merge steps in
    # a row accepted nothing and the log joint per point moved less than `tol` across them,
    # only the `stop_split_merge_before_end` refinement epochs remain. None: every epoch
    tol: float | None = 1e-3
    n_moves_no_change: int = 4
    split_min_size: int = 5  # clusters smaller than this are never split
    subcluster_min_size: int = 5  # each child must have more points than this
    merge_neighbours: int = 2  # merge candidates per cluster (FAISS kNN on the means)
    # report clusters, not components: components that share a mode of the fitted
    # density (a heavy-tailed or skewed cluster covered by several Gaussians) are one
    # cluster (clustering/modes.py). Off: one cluster per component
    merge_modes: bool = True
    split: bool = True
    merge: bool = True
    # responsibilities of the M-step and of the hard sets that split/merge moves score:
    # gmm = the E-step of the current mixture (exact EM; the net's targets); net = the
    # clustering net's outputs during the epoch (the authors' design). With `net`, moves
    # are judged on a net that has not caught up with the last move, and K ping-pongs
    # between splits and merges (docs/benchmarks.md)
    m_step_from: str = "gmm"
    epoch_end_pass: bool = False  # m_step_from=net: M-step on a fresh no-grad pass
    # --- run
    device: str | None = None  # None -> cuda if available else cpu
    # CPU threads during fit (None: torch's setting). Per-epoch ops are small, and on a
    # 2-core machine torch's multi-threaded paths (index_add_, reductions) ran 5x slower
    # than one thread; raise this for large D on many idle cores.
    cpu_threads: int | None = 1
    seed: int = 0
    verbose: bool = False  # progress bar with the current K
    eval_every: int = 1  # metrics every n epochs when labels are given


CONFIG_KEYS = tuple(f.name for f in fields(DeepDPMConfig))


# ---------------------------------------------------------------------- AE alternation
ASSIGNMENTS = ("hard", "soft")
# the kinds of clustering/transform.py each input accepts
INPUT_TRANSFORMS = ("none", "normalize", "standardize", "whiten")  # DeepDPM's
AE_INPUT_TRANSFORMS = ("none", "normalize", "scale", "standardize")  # the autoencoder's


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


def as_dict(cfg: Any, name: str) -> dict[str, Any]:
    """Dataclass, mapping or omegaconf DictConfig -> plain dict."""
    if cfg is None:
        return {}
    if hasattr(cfg, "__dataclass_fields__"):
        return asdict(cfg)
    if isinstance(cfg, DictConfig):
        return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise ConfigError(f"{name} must be a dataclass or a mapping, got {type(cfg).__name__}")


def make_alternation_config(cfg: Any = None) -> AlternationConfig:
    """AlternationConfig from a dataclass/mapping; unknown keys -> ConfigError."""
    values = as_dict(cfg, "alternation config")
    unknown = sorted(set(values) - set(ALTERNATION_KEYS))
    if unknown:
        raise ConfigError(f"alternate: unknown key(s) {unknown}; valid keys: "
                          f"{', '.join(ALTERNATION_KEYS)}")
    out = AlternationConfig(**values)
    out.hidden_dims = [int(h) for h in out.hidden_dims]
    out.cluster_overrides = as_dict(out.cluster_overrides, "alternate.cluster_overrides")
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
    need(cfg.input_transform in AE_INPUT_TRANSFORMS,
         f"input_transform must be one of {AE_INPUT_TRANSFORMS}, got {cfg.input_transform!r}")
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
    values = as_dict(cfg, "clustering config")
    valid = {f.name for f in fields(DeepDPMConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ConfigError(f"clustering (cluster section or alternate.cluster_overrides): "
                          f"unknown key(s) {unknown}; valid keys: "
                          f"{', '.join(sorted(valid))}")
    return asdict(DeepDPMConfig(**values))
