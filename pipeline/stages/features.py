"""Features stage: train MoCo and embed the data set, or import pre-computed embeddings.

With `features.embeddings` set, the file is validated and copied as float32
`embeddings.npy` (plus `labels.npy`), so later stages read one format; the MoCo settings
are then ignored (and not hashed). Otherwise MoCo trains into `moco/` (resuming from
`moco/last.pt` after an interruption with the same config) and embeds into `embed/`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from data.errors import DataNotFoundError, InputError
from data.files import load_array, load_labels, save_npy
from data.records import EpochRecord
from pipeline.config import plain
from pipeline.manifest import hash_file, hash_tree_listing
from pipeline.samples import ImageSource
from pipeline.stages.base import Stage, StageContext, StageResult

IMPORT_KEYS = ("embeddings", "labels", "embeddings_key")


def _importing(cfg: DictConfig) -> bool:
    return bool(cfg.features.embeddings)


def _existing(key: str, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"features.{key}={value}: no such file")
    return path


def _import(ctx: StageContext, out: Path) -> StageResult:
    from clustering.validation import check_array

    f = ctx.cfg.features
    src = _existing("embeddings", f.embeddings)
    x = check_array(load_array(src, key=f.embeddings_key), f"embeddings ({src})")
    save_npy(out / "embeddings.npy", x)
    outputs, artifacts = ["embeddings.npy"], {"embeddings": "embeddings.npy", "source": str(src)}
    if f.labels:
        y = load_labels(_existing("labels", f.labels))
        if len(y) != len(x):
            raise InputError(f"features.labels has {len(y)} entries but the embeddings have "
                             f"{len(x)} rows")
        save_npy(out / "labels.npy", y)
        outputs.append("labels.npy")
        artifacts["labels"] = "labels.npy"
    return StageResult(outputs, artifacts, {"n": int(x.shape[0]), "dim": int(x.shape[1])})


def _moco_config(cfg: DictConfig) -> Any:
    """The plain FeaturesConfig the features package expects (import keys removed)."""
    from features.config import FeaturesConfig

    values = {k: v for k, v in plain(cfg, "features").items() if k not in IMPORT_KEYS}
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(FeaturesConfig), values))


def _image_source(cfg: DictConfig, embed_dir: Path, out: Path) -> ImageSource:
    """How the report maps embedding rows back to images."""
    rel = embed_dir.relative_to(out)
    source = str(cfg.features.data.source)
    images: ImageSource = {"source": source}
    if (embed_dir / "indices.npy").is_file():
        images["indices"] = str(rel / "indices.npy")
        images["seed"] = int(OmegaConf.select(cfg, "features.data.seed", default=0) or 0)
    if (embed_dir / "paths.txt").is_file():
        images["paths"] = str(rel / "paths.txt")
        images["root"] = str(OmegaConf.select(cfg, "features.data.root", default="") or "")
    return images


def _train_and_embed(ctx: StageContext, out: Path) -> StageResult:
    from features import embed_dataset, train_moco

    fcfg = _moco_config(ctx.cfg)
    progress = sys.stderr.isatty()  # train_moco prints its own bar and epoch lines then
    log = ctx.tracker.stage_log("features", out)

    def on_epoch(record: EpochRecord) -> None:
        log(record)
        if not progress:
            print(f"[features] MoCo epoch {record.get('epoch')}/{fcfg.train.epochs}: "
                  f"loss {record.get('loss', float('nan')):.4f}", flush=True)

    ckpt = Path(train_moco(fcfg, out / "moco", progress=progress, on_epoch=on_epoch))
    embed_dir = Path(embed_dataset(ckpt, fcfg, out / "embed"))
    artifacts: dict[str, Any] = {
        "embeddings": str((embed_dir / "embeddings.npy").relative_to(out)),
        "checkpoint": str(ckpt.relative_to(out)),
        "images": _image_source(ctx.cfg, embed_dir, out),
    }
    if (embed_dir / "labels.npy").is_file():
        artifacts["labels"] = str((embed_dir / "labels.npy").relative_to(out))
    outputs = [str(p.relative_to(out)) for p in sorted(embed_dir.rglob("*")) if p.is_file()]
    outputs.append(artifacts["checkpoint"])
    if (out / "history.csv").is_file():
        outputs.append("history.csv")
    shape = np.load(embed_dir / "embeddings.npy", mmap_mode="r").shape
    manifest = embed_dir / "manifest.json"
    if manifest.is_file():  # class names, for the report's axes
        artifacts["classes"] = json.loads(manifest.read_text()).get("classes")
    return StageResult(outputs, artifacts, {"n": int(shape[0]), "dim": int(shape[1])})


def run(ctx: StageContext, out: Path) -> StageResult:
    return _import(ctx, out) if _importing(ctx.cfg) else _train_and_embed(ctx, out)


def _config(cfg: DictConfig) -> Any:
    values = plain(cfg, "features")
    if _importing(cfg):  # MoCo settings play no part when embeddings are given
        return {k: values[k] for k in IMPORT_KEYS}
    return {k: v for k, v in values.items() if k not in IMPORT_KEYS}


def _extra_inputs(cfg: DictConfig) -> dict[str, Any]:
    """The bytes of imported files, or a listing of an image folder."""
    f = cfg.features
    if _importing(cfg):
        inputs = {"embeddings": hash_file(_existing("embeddings", f.embeddings))}
        if f.labels:
            inputs["labels"] = hash_file(_existing("labels", f.labels))
        return inputs
    root = OmegaConf.select(cfg, "features.data.root", default=None)
    if f.data.source == "imagefolder" and root:
        if not Path(root).is_dir():
            raise DataNotFoundError(f"features.data.root={root}: no such folder")
        return {"images": hash_tree_listing(root)}
    # ImageNet is identified by its path (in the config hash): listing 1.3M files per run
    # would cost more than it protects; the built-in digits never change.
    return {}


STAGE = Stage(name="features", run=run, config=_config, extra_inputs=_extra_inputs,
              keep=("moco", "history.csv"))
