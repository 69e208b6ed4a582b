"""The per-epoch record: what every trainer reports after each epoch through `on_epoch`,
and what a stage's history.csv and W&B hold. One definition for its writers
(clustering/model.py, clustering/alternation.py, clustering/autoencoder.py,
features/train.py) and its readers (pipeline/tracking.py, pipeline/report.py).

Every key is optional: each trainer fills the ones it has. In history.csv the values come
back as strings (and `sizes` as space-separated counts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict


class EpochRecord(TypedDict, total=False):
    epoch: int
    # which loop wrote it, in the AE alternation (absent for a plain DeepDPM or MoCo run):
    # pretrain | ae (AE epochs) | cluster (DeepDPM epochs) | alternation (one per run)
    stage: str
    alternation: int  # the alternation's index t (-1 while pretraining)
    # DeepDPM
    k: int  # clusters of the model after this epoch's moves
    k_used: int  # clusters that hold points
    event: str  # "" | "split" | "merge"
    cluster_loss: float
    subcluster_loss: float
    splits_proposed: int
    splits_accepted: int
    merges_proposed: int
    merges_accepted: int
    pruned: int
    log_joint: float  # log p(partition, X): what the split/merge moves climb
    sizes: Any  # points per cluster (array; on_epoch only)
    nmi: float  # scores against y_eval, when labels are given
    ari: float
    acc: float
    # autoencoder (pretraining and alternations)
    recon_loss: float
    pull_loss: float
    # one finished alternation (stage "alternation"; also alt_<t>/summary.json)
    init_k: int
    prior_sigma_scale: float
    ae_seconds: float
    cluster_seconds: float
    # MoCo
    loss: float
    lr: float
    images_per_s: float
    steps: int
    global_step: int
    seconds: float  # since the start of the fit (DeepDPM) or of the epoch (MoCo)


EpochCallback = Callable[[EpochRecord], None]
