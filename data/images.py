"""Image data sets: files on disk (ImageFolder / ImageNet layouts) and in-memory arrays.

Both kinds yield `(transform(image), label, row)` so training and embedding treat them the
same; `row` lets every embedding be traced back to its image. Scanning checks the layout
up front, so a wrong path fails at once with a message saying what belongs where, not
halfway through an epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from data.errors import DataNotFoundError, InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
FOLDER_LAYOUT = "<root>/<class name>/<image files> (.png, .jpg, ...)"


def _image_files(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted so runs are reproducible."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _require_dir(root: Path, what: str, layout: str) -> None:
    if not root.exists():
        raise DataNotFoundError(f"{what} {root}: no such directory; expected {layout}")
    if not root.is_dir():
        raise InputError(f"{what} {root}: is a file, expected a directory laid out as {layout}")


def scan_image_folder(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """(paths, labels, class names) of `<root>/<class>/<image>`; classes sorted by name."""
    root = Path(root).expanduser()
    _require_dir(root, "image folder", FOLDER_LAYOUT)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = _image_files(root / name)
        paths += files
        labels += [label] * len(files)
    if not paths:
        loose = _image_files(root)
        hint = (f" ({len(loose)} images lie directly in it: move them into one sub-folder "
                "per class)") if loose else ""
        raise DataNotFoundError(f"image folder {root}: no images found{hint}; expected "
                                f"{FOLDER_LAYOUT}")
    return paths, np.asarray(labels, dtype=np.int64), classes


def read_class_subset(subset_file: str | Path) -> list[tuple[str, str]]:
    """(wnid, name) pairs of a class-subset file: lines `wnid name...`, `#` comments."""
    path = Path(subset_file).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"class-subset file {path}: no such file (lines `wnid name`, "
                                "e.g. data/imagenet_50.txt)")
    entries = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        wnid, _, name = line.partition(" ")
        entries.append((wnid, name.strip() or wnid))
    if not entries:
        raise InputError(f"class-subset file {path}: lists no classes")
    wnids = [w for w, _ in entries]
    if len(set(wnids)) != len(wnids):
        dup = sorted({w for w in wnids if wnids.count(w) > 1})
        raise InputError(f"class-subset file {path}: classes listed twice: {', '.join(dup)}")
    return entries


def scan_imagenet(root: str | Path, split: str,
                  subset: Sequence[tuple[str, str]]) -> tuple[list[Path], np.ndarray, list[str]]:
    """(paths, labels, wnids) of `<root>/<split>/<wnid>/*.JPEG`; labels in subset order."""
    root = Path(root).expanduser()
    layout = f"<root>/{split}/<wnid>/*.JPEG (e.g. <root>/{split}/{subset[0][0]}/...)"
    _require_dir(root, "ImageNet root", layout)
    split_dir = root / split
    _require_dir(split_dir, f"ImageNet {split} split", layout)
    paths: list[Path] = []
    labels: list[int] = []
    for label, (wnid, name) in enumerate(subset):
        folder = split_dir / wnid
        files = _image_files(folder) if folder.is_dir() else []
        if not files:
            state = "has no images" if folder.is_dir() else "is missing"
            raise DataNotFoundError(f"class {wnid} ({name}) of the class subset {state}: "
                                    f"expected images in {folder}/")
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), [w for w, _ in subset]


def open_image(path: Path, mode: str) -> Any:
    """Decode an image fully (so truncated files fail here), naming the file if it cannot."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except Exception as exc:
        raise InputError(f"{path}: corrupt or unreadable image ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from exc


class ImageFileDataset(Dataset):
    """Images read from files; `paths` and `labels` are aligned with the rows."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray | None, classes: list[str],
                 transform: Callable | None = None, mode: str = "RGB") -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = labels
        self.classes = classes
        self.transform = transform
        self.mode = mode
        self.channels = 1 if mode == "L" else 3

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> tuple[Any, int, int]:
        image = open_image(self.paths[row], self.mode)
        label = -1 if self.labels is None else int(self.labels[row])
        return (self.transform(image) if self.transform else image), label, row


class ArrayImageDataset(Dataset):
    """Images held in memory as uint8 N x H x W (grayscale) or N x H x W x 3 arrays.

    `ids` are the rows' positions in the source array (e.g. the shuffled digits), kept so
    a subsampled set still maps back to the original images.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, ids: np.ndarray,
                 classes: list[str], transform: Callable | None = None) -> None:
        if images.ndim not in (3, 4) or images.dtype != np.uint8:
            raise InputError(f"in-memory images must be uint8 N x H x W (x 3), got "
                             f"{images.dtype} {images.shape}")
        self.images = images
        self.labels = labels
        self.ids = ids
        self.classes = classes
        self.transform = transform
        self.paths = None
        self.channels = 1 if images.ndim == 3 else 3

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int) -> tuple[Any, int, int]:
        from PIL import Image

        image = Image.fromarray(self.images[row])
        label = -1 if self.labels is None else int(self.labels[row])
        return (self.transform(image) if self.transform else image), label, row
