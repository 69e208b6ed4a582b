"""Reading embedding/label files and writing outputs atomically.

Embeddings come as .npy, .npz (a named array) or .pt (a tensor saved with torch.save).
A .pt file is loaded with `weights_only=True`; one that holds pickled objects is refused
unless the caller passes `allow_pickle=True`, so nothing is unpickled silently.
Outputs are written to a temporary file in the same folder and renamed, so a crash
never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from data.errors import DataNotFoundError, InputError
from data.folders import file_mode

ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth")


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a .npy, .npz or .pt file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: file is not readable")


def load_torch_dict(path: str | os.PathLike, what: str, device: Any = "cpu",
                    hint: str = "") -> dict[str, Any]:
    """The dict a torch file of ours holds (model, autoencoder, checkpoint): read with
    `weights_only` (tensors and plain values: no code is unpickled), one-line errors that
    name the file and what it should be (`hint` says how to make one). Format and key
    checks are the caller's: each file kind has its own."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such file; expected a {what} file{hint}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # not torch's format, truncated, or holds code
        raise InputError(f"{path}: not a {what} file ({exc.__class__.__name__}){hint}") from exc
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a {what} file (holds a {type(state).__name__}){hint}")
    return state


def _load_pt(path: Path, allow_pickle: bool) -> Any:
    import pickle

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not allow_pickle:
            raise InputError(
                f"{path}: holds pickled Python objects, not a plain tensor; refusing to "
                "unpickle it (pass --allow-pickle / allow_pickle=True if you trust the file)"
            ) from exc
    except Exception as exc:  # corrupt zip, truncated file, ...
        raise InputError(
            f"{path}: cannot be read as a torch file ({exc.__class__.__name__})") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a plain pickle file (not torch's zip format)
        pass
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except Exception as exc:
        raise InputError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from exc


def _to_numpy(obj: Any, path: Path, key: str | None) -> np.ndarray:
    import torch

    if isinstance(obj, dict):
        if key is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor | np.ndarray)}
            if len(tensors) != 1:
                raise InputError(
                    f"{path}: holds a dict with keys {sorted(map(str, obj))}; name the array to use"
                )
            obj = next(iter(tensors.values()))
        elif key not in obj:
            raise InputError(f"{path}: no key {key!r}; keys are {sorted(map(str, obj))}")
        else:
            obj = obj[key]
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, list | tuple):
        return np.asarray(obj)
    raise InputError(f"{path}: holds a {type(obj).__name__}, expected an array or tensor")


def load_array(path: str | os.PathLike, *, key: str | None = None,
               allow_pickle: bool = False, mmap: bool = False) -> np.ndarray:
    """Load an array from .npy, .npz (named array, or the only one) or .pt/.pth. With
    `mmap`, a .npy file is memory-mapped (read-only) rather than read: a caller that takes
    a shard of the rows reads only those."""
    path = Path(path)
    _check_readable(path)
    suffix = path.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise InputError(f"{path}: unsupported file type {suffix!r}; use .npy, .npz or .pt")
    try:
        if suffix == ".npy":
            with open(path, "rb") as fh:
                if fh.read(6) != b"\x93NUMPY":
                    raise InputError(f"{path}: cannot be read: not a .npy file (no NumPy header)")
            return np.load(path, allow_pickle=allow_pickle, mmap_mode="r" if mmap else None)
        if suffix == ".npz":
            with np.load(path, allow_pickle=allow_pickle) as npz:
                names = list(npz.files)
                if key is None:
                    if len(names) != 1:
                        raise InputError(
                            f"{path}: holds arrays {names}; name one (e.g. --key {names[0]})"
                        )
                    key = names[0]
                if key not in names:
                    raise InputError(f"{path}: no array {key!r}; arrays are {names}")
                return npz[key]
    except InputError:
        raise
    except ValueError as exc:
        if "max_header_size" in str(exc):
            raise InputError(f"{path}: its .npy header is far larger than NumPy writes; "
                             "refusing to parse it (re-save the array with np.save)") from exc
        if "pickle" in str(exc).lower():
            raise InputError(
                f"{path}: holds pickled Python objects; refusing to unpickle "
                "(pass --allow-pickle if you trust the file)"
            ) from exc
        raise InputError(f"{path}: cannot be read ({exc})") from exc
    except Exception as exc:
        raise InputError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from exc
    return _to_numpy(_load_pt(path, allow_pickle), path, key)


def load_labels(path: str | os.PathLike, *, allow_pickle: bool = False) -> np.ndarray:
    """Load a 1-D label vector (any integer or string dtype) from an array file or .txt."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        _check_readable(path)
        labels = np.array(path.read_text().split())
    else:
        labels = np.asarray(load_array(path, allow_pickle=allow_pickle))
    if labels.ndim == 2 and 1 in labels.shape:
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise InputError(f"{path}: labels must be 1-D, got shape {labels.shape}")
    return labels


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode())  # mkstemp makes 0600; follow the umask like open()
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write an array as .npy atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(array))
    return Path(path)


def save_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (numpy scalars and arrays are converted)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    return save_text(path, json.dumps(obj, indent=2, default=default) + "\n")


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """torch.save atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_csv(path: str | os.PathLike, rows: list[dict[str, Any]],
             columns: list[str] | None = None) -> Path:
    """Write a list of flat dicts as CSV atomically: the one CSV writer of the project.

    Columns: `columns`, else the union of the rows' keys in first-seen order; values that
    are not scalars (lists, arrays) are left out; Unix line ends."""
    import csv
    import io

    if columns is None:
        columns = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: v for k, v in row.items() if np.isscalar(v) or v is None})
    return save_text(path, buf.getvalue())
