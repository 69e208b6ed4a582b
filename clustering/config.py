"""Every DeepDPM hyper-parameter in one dataclass: the constructor's keywords, the YAML
schema (`configs/clustering.yaml`) and the command line's `key=value` overrides.

Defaults differ from the authors' code where the spec (section 9) says it is wrong or slow;
each such default is commented.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


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
    transform: str = "none"
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
