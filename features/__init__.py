"""MoCo v2 feature learning for DeepDPM: train an encoder without labels, embed images.

`train_moco(cfg, out_dir)` trains (resuming from `out_dir/last.pt`) and returns the
checkpoint; `embed_dataset(checkpoint, cfg, out_dir)` writes the embeddings DeepDPM
clusters. Configuration: `features.config.FeaturesConfig` (importing it, or this package,
does not load torch; the two functions are imported on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from features.config import FeaturesConfig

if TYPE_CHECKING:
    from features.embed import embed_dataset
    from features.train import train_moco

__all__ = ["FeaturesConfig", "embed_dataset", "train_moco"]


def __getattr__(name: str) -> Any:
    if name == "embed_dataset":
        from features.embed import embed_dataset

        return embed_dataset
    if name == "train_moco":
        from features.train import train_moco

        return train_moco
    raise AttributeError(f"module 'features' has no attribute {name!r}")
