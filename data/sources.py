"""One factory for every image source the feature stage reads.

`build_dataset(data_cfg, transform)` turns the `data` section of the features config into
a data set: `mnist` (the built-in 5,000 digits), `imagefolder` (`<root>/<class>/<img>`)
or `imagenet` (`<root>/<split>/<wnid>/*.JPEG` restricted to a class-subset file). The
optional `imbalance` setting subsamples classes to given fractions with a fixed seed, as
the DeepDPM paper's imbalanced sets do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from data.errors import ConfigError, DataNotFoundError
from data.images import (
    ArrayImageDataset,
    ImageFileDataset,
    read_class_subset,
    scan_image_folder,
    scan_imagenet,
)
from data.source_names import SOURCES, SPLITS

DEFAULT_SUBSET = Path(__file__).resolve().parent / "imagenet_50.txt"
MNIST_SIZE = 28
FILE_IMAGE_SIZE = 224


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    value = cfg.get(key, default) if isinstance(cfg, Mapping) else getattr(cfg, key, default)
    return default if value is None else value


def default_image_size(data_cfg: Any) -> int:
    """The configured size, else the digits' native 28 px or the usual 224 px for files."""
    size = _get(data_cfg, "image_size")
    if size is not None:
        return int(size)
    return MNIST_SIZE if _get(data_cfg, "source", "mnist") == "mnist" else FILE_IMAGE_SIZE


def class_fractions(imbalance: Any, classes: Sequence[str]) -> np.ndarray:
    """Per-class keep fractions from a list (label order) or a {class: fraction} mapping.

    Mapping keys may be label numbers or class names (folder names / wnids / digits);
    classes not named keep all their images.
    """
    n = len(classes)
    fractions = np.ones(n)
    if isinstance(imbalance, Mapping):
        names = {name: i for i, name in enumerate(classes)}
        for key, value in imbalance.items():
            if str(key) in names:
                index = names[str(key)]
            elif isinstance(key, int) or str(key).isdigit():
                index = int(key)
            else:
                raise ConfigError(f"data.imbalance: unknown class {key!r}; classes are "
                                  f"{', '.join(classes[:20])}{' ...' if n > 20 else ''}")
            if not 0 <= index < n:
                raise ConfigError(f"data.imbalance: class {key!r} is out of range 0..{n - 1}")
            fractions[index] = float(value)
    elif isinstance(imbalance, Sequence) and not isinstance(imbalance, str):
        if len(imbalance) != n:
            raise ConfigError(f"data.imbalance: {len(imbalance)} fractions given for {n} "
                              "classes (one per class, in label order)")
        fractions = np.asarray([float(v) for v in imbalance])
    else:
        raise ConfigError("data.imbalance: give a list of fractions (one per class) or a "
                          "mapping {class: fraction}")
    if np.any((fractions <= 0) | (fractions > 1)):
        raise ConfigError("data.imbalance: every fraction must lie in (0, 1]")
    return fractions


def imbalance_rows(labels: np.ndarray, fractions: np.ndarray, seed: int) -> np.ndarray:
    """Sorted rows kept when class c keeps round(fractions[c] * n_c) (>= 1) random images."""
    rng = np.random.default_rng(seed)
    keys = rng.random(len(labels))  # one random key per image: a per-class random order
    order = np.lexsort((keys, labels))  # grouped by class, shuffled within each class
    counts = np.bincount(labels, minlength=len(fractions))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keep_n = np.where(counts > 0, np.maximum(1, np.round(fractions * counts)), 0).astype(int)
    rank = np.arange(len(labels)) - np.repeat(starts, counts)
    return np.sort(order[rank < np.repeat(keep_n, counts)])


@lru_cache(maxsize=2)
def _digits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The built-in digits, read-only and cached: parsing them takes seconds."""
    from data.mnist import load_mnist_digits

    images, labels = load_mnist_digits(seed=seed)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _mnist(data_cfg: Any, transform: Callable | None) -> ArrayImageDataset:
    images, labels = _digits(int(_get(data_cfg, "seed", 0)))
    classes = [str(d) for d in range(10)]
    return ArrayImageDataset(images, labels, np.arange(len(labels)), classes, transform)


def _files(data_cfg: Any, transform: Callable | None) -> ImageFileDataset:
    source = _get(data_cfg, "source")
    root = _get(data_cfg, "root")
    if not root:
        layout = ("<root>/<class>/<images>" if source == "imagefolder"
                  else "<root>/train/<wnid>/*.JPEG")
        raise DataNotFoundError(f"data.source={source} needs data.root: the directory "
                                f"holding {layout} (or --data DIR on the command line)")
    if source == "imagefolder":
        paths, labels, classes = scan_image_folder(root)
    else:
        split = _get(data_cfg, "split", "train")
        if split not in SPLITS:
            raise ConfigError(f"data.split={split!r}: use one of {', '.join(SPLITS)}")
        subset = read_class_subset(_get(data_cfg, "subset_file", DEFAULT_SUBSET))
        paths, labels, classes = scan_imagenet(root, split, subset)
    return ImageFileDataset(paths, labels, classes, transform)


def build_dataset(data_cfg: Any, transform: Callable | None = None) -> Any:
    """The data set the `data` config section describes (after class subsampling).

    The result has `labels`, `classes`, `channels` and either `paths` (files) or `ids`
    (rows of the in-memory source), aligned with its rows.
    """
    source = _get(data_cfg, "source", "mnist")
    if source not in SOURCES:
        raise ConfigError(f"data.source={source!r}: use one of {', '.join(SOURCES)}")
    dataset = _mnist(data_cfg, transform) if source == "mnist" else _files(data_cfg, transform)
    imbalance = _get(data_cfg, "imbalance")
    if imbalance is not None and len(imbalance) > 0:
        fractions = class_fractions(imbalance, dataset.classes)
        rows = imbalance_rows(dataset.labels, fractions, int(_get(data_cfg, "seed", 0)))
        if isinstance(dataset, ArrayImageDataset):
            dataset = ArrayImageDataset(dataset.images[rows], dataset.labels[rows],
                                        dataset.ids[rows], dataset.classes, transform)
        else:
            dataset = ImageFileDataset([dataset.paths[r] for r in rows], dataset.labels[rows],
                                       dataset.classes, transform)
    return dataset
