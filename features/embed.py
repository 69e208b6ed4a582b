"""Embedding: one feature row per image, written with what is needed to trace it back.

Outputs in `out_dir`: `embeddings.npy` (float32 N x D), `labels.npy` (when the source has
labels), `paths.txt` (image files) or `indices.npy` (rows of an in-memory source such as
the built-in digits) and `manifest.json`, written last so its presence means the rest is
complete. Every file is written atomically.
"""

from __future__ import annotations

import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from data.config import to_container
from data.devices import resolve_device
from data.errors import InputError
from data.files import save_json, save_npy, save_text
from data.runtime import env_rank, env_world_size
from data.sources import build_dataset, default_image_size
from features.checkpoint import encoder_from_checkpoint, load_checkpoint
from features.config import as_config
from features.loader import batches, make_loader
from features.models import MoCoEncoder, build_encoder
from features.transforms import eval_transform


def _versions() -> dict[str, str]:
    import lightly
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "lightly": lightly.__version__,
            "numpy": np.__version__}


def _encoder(checkpoint: Path | None, cfg: Any, channels: int,
             image_size: int) -> tuple[MoCoEncoder, dict[str, Any]]:
    """The trained query encoder, or a seeded untrained one when no checkpoint is given."""
    if checkpoint is None:
        torch.manual_seed(cfg.train.seed)
        return build_encoder(cfg.model, channels, image_size), {"checkpoint": None}
    state = load_checkpoint(checkpoint)
    encoder, meta = encoder_from_checkpoint(state)
    if meta["in_channels"] != channels:
        raise InputError(f"checkpoint {checkpoint}: trained on {meta['in_channels']}-channel "
                         f"images, but data.source={cfg.data.source} gives {channels}-channel "
                         "ones")
    info = {"checkpoint": str(Path(checkpoint).resolve()), "epoch": int(state["epoch"]),
            "global_step": int(state.get("global_step", 0)), "trained_with": state["config"]}
    return encoder, info


@torch.inference_mode()
def _features(encoder: MoCoEncoder, loader: Any, n: int, cfg: Any,
              device: torch.device) -> np.ndarray:
    dim = encoder.feature_dim if cfg.embed.output == "backbone" else encoder.output_dim
    out = np.empty((n, dim), dtype=np.float32)
    use_amp = device.type == "cuda" and cfg.train.amp
    for x, _, rows in batches(loader):
        x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, enabled=use_amp):
            z = encoder.embed(x, cfg.embed.output).float()
        if cfg.embed.normalize:
            z = F.normalize(z, dim=1)
        out[rows.numpy()] = z.cpu().numpy()
    return out


def _source_info(cfg: Any, dataset: Any) -> dict[str, Any]:
    data = to_container(cfg.data)
    data.update(n_images=len(dataset), n_classes=len(dataset.classes),
                channels=dataset.channels)
    return data


def embed_dataset(checkpoint: Path | None, cfg: Any, out_dir: Path) -> Path:
    """Embed every image of `cfg.data` with the checkpoint's encoder; return `out_dir`.

    Under torchrun only rank 0 embeds (the data set is small next to training); the other
    ranks return at once.
    """
    cfg = as_config(cfg)
    out_dir = Path(out_dir)
    if env_world_size() > 1 and env_rank() != 0:
        return out_dir
    start = time.perf_counter()
    device = resolve_device(cfg.train.device, "train.device")
    image_size = default_image_size(cfg.data)
    dataset = build_dataset(cfg.data)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    encoder, info = _encoder(checkpoint, cfg, dataset.channels, image_size)
    encoder.eval().to(device, memory_format=torch.channels_last)
    dataset.transform = eval_transform(image_size, dataset.channels)
    loader = make_loader(dataset, cfg.embed.batch_size, shuffle=False, drop_last=False,
                         num_workers=cfg.embed.num_workers, device=device)
    embeddings = _features(encoder, loader, len(dataset), cfg, device)

    files = {"embeddings": "embeddings.npy"}
    save_npy(out_dir / "embeddings.npy", embeddings)
    stale = []
    if dataset.labels is not None:
        save_npy(out_dir / "labels.npy", dataset.labels.astype(np.int64))
        files["labels"] = "labels.npy"
    else:
        stale.append("labels.npy")
    if dataset.paths is not None:
        save_text(out_dir / "paths.txt", "".join(f"{p.resolve()}\n" for p in dataset.paths))
        files["paths"] = "paths.txt"
        stale.append("indices.npy")
    else:
        save_npy(out_dir / "indices.npy", dataset.ids.astype(np.int64))
        files["indices"] = "indices.npy"
        stale.append("paths.txt")
    for name in stale:  # left over from an earlier run with another source
        (out_dir / name).unlink(missing_ok=True)
    manifest = {
        "kind": "features.embeddings",
        "files": files,
        "shape": list(embeddings.shape),
        "dtype": "float32",
        "output": cfg.embed.output,
        "normalized": bool(cfg.embed.normalize),
        "image_size": image_size,
        "data": _source_info(cfg, dataset),
        "classes": list(dataset.classes),
        **info,
        "config": to_container(cfg),
        "device": str(device),
        "seconds": round(time.perf_counter() - start, 3),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    save_json(out_dir / "manifest.json", manifest)
    return out_dir
