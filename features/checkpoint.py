"""Reading MoCo checkpoints back, with one-line errors for a wrong or damaged file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from data.errors import InputError
from data.files import load_torch_dict
from data.sources import default_image_size
from features.config import as_config
from features.models import MoCoEncoder, build_encoder

REQUIRED_KEYS = ("model", "config", "epoch")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict written by `train_moco` (tensors only: no unpickling of code)."""
    state = load_torch_dict(path, "MoCo checkpoint", device,
                            hint=" (write one with: python -m features train ...)")
    if any(k not in state for k in REQUIRED_KEYS):
        raise InputError(f"checkpoint {path}: not a MoCo checkpoint (needs keys "
                         f"{', '.join(REQUIRED_KEYS)})")
    return state


def encoder_from_checkpoint(state: dict[str, Any]) -> tuple[MoCoEncoder, dict[str, Any]]:
    """Rebuild the query encoder a checkpoint holds; returns it and its input metadata."""
    cfg = as_config(state["config"])
    meta = dict(state.get("meta") or {})
    meta.setdefault("in_channels", 3)
    meta.setdefault("image_size", default_image_size(cfg.data))
    cfg.model.small_images = meta.get("small_images", cfg.model.small_images)
    encoder = build_encoder(cfg.model, meta["in_channels"], meta["image_size"])
    try:
        encoder.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise InputError(f"checkpoint: weights do not fit its own model config "
                         f"({str(exc).splitlines()[0]})") from exc
    return encoder, meta
