"""DeepDPM clustering of embeddings with an unknown number of clusters."""

from clustering.config import DeepDPMConfig
from clustering.model import DeepDPM

__all__ = ["DeepDPM", "DeepDPMConfig"]
