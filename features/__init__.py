"""MoCo v2 feature learning for DeepDPM: train an encoder without labels, embed images.

`train_moco(cfg, out_dir)` trains (resuming from `out_dir/last.pt`) and returns the
checkpoint; `embed_dataset(checkpoint, cfg, out_dir)` writes the embeddings DeepDPM
clusters. Configuration: `features.config.FeaturesConfig`.
"""

from features.config import FeaturesConfig
from features.embed import embed_dataset
from features.train import train_moco

__all__ = ["FeaturesConfig", "embed_dataset", "train_moco"]
