"""DeepDPM clustering of embeddings with an unknown number of clusters.

`DeepDPM` is imported on first use, so that reading a config (`clustering.config`) does not
load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clustering.config import DeepDPMConfig

if TYPE_CHECKING:
    from clustering.model import DeepDPM

__all__ = ["DeepDPM", "DeepDPMConfig"]


def __getattr__(name: str) -> Any:
    if name == "DeepDPM":
        from clustering.model import DeepDPM

        return DeepDPM
    raise AttributeError(f"module 'clustering' has no attribute {name!r}")
