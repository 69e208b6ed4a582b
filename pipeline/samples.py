"""Map embedding rows back to their images, for the report's samples-per-cluster grid.

The features stage records where the rows came from: for the built-in MNIST digits the
shuffle seed and `indices.npy` (row -> digit index; the digits are reloaded with the same
seed), for image folders `paths.txt` (row -> image file). Imported embeddings have no
images unless the user gives none, in which case the grid is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

ImageLoader = Callable[[int], np.ndarray]
THUMB = 64


class ImageSource(TypedDict, total=False):
    """The `images` artifact of the features stage's manifest: where its rows came from.
    Written by pipeline/stages/features.py, read here. Paths are relative to the stage's
    folder."""

    source: str  # data.source: mnist | imagefolder | imagenet
    indices: str  # indices.npy: row -> digit index (mnist)
    seed: int  # the shuffle seed the digits are reloaded with (mnist)
    paths: str  # paths.txt: row -> image file (image folders)
    root: str  # the folder the paths are relative to


def _path_loader(paths: list[str]) -> ImageLoader:
    from PIL import Image

    def load(row: int) -> np.ndarray:
        with Image.open(paths[row]) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMB, THUMB))
            return np.asarray(img)

    return load


def image_loader(features_dir: Path, artifacts: dict[str, Any]) -> ImageLoader | None:
    """A row -> image function, or None when the rows cannot be traced back to images."""
    images: ImageSource = artifacts.get("images") or {}
    source = images.get("source")
    if source == "mnist" and images.get("indices"):
        from data.mnist import load_mnist_digits

        digits, _ = load_mnist_digits(seed=int(images.get("seed", 0)))
        index = np.load(features_dir / images["indices"])
        return lambda row: digits[int(index[row])]
    if images.get("paths"):
        paths = (features_dir / images["paths"]).read_text().splitlines()
        base = Path(images.get("root") or "")
        return _path_loader([str(base / p) if not Path(p).is_absolute() else p for p in paths])
    return None


def pick_samples(labels: np.ndarray, load: ImageLoader, *, max_clusters: int, per_cluster: int,
                 seed: int = 0) -> list[tuple[int, int, list[np.ndarray]]]:
    """(cluster, size, images) for the largest clusters, members drawn at random."""
    rng = np.random.default_rng(seed)
    ids, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:max_clusters]
    out = []
    for i in order:
        members = np.flatnonzero(labels == ids[i])
        chosen = rng.choice(members, size=min(per_cluster, len(members)), replace=False)
        out.append((int(ids[i]), int(counts[i]), [load(int(r)) for r in chosen]))
    return out
