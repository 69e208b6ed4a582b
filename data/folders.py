"""Output folders that are never half-written, never shared by two runs, and never emptied
of files we did not write.

- `folder_lock(target)`: an exclusive fcntl lock on a sibling `.<name>.lock` file; a second
  run exits at once with a message naming the holder's pid (the lock dies with its process,
  so a killed run never leaves a stale lock).
- `atomic_folder(target, owned)`: the caller writes into a temporary sibling folder; only on
  success is the old folder replaced by it (two renames), so `target` holds one whole run.
  An existing `target` that holds entries not in `owned` is refused before any work starts.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from data.errors import InputError


def file_mode() -> int:
    """The mode a plain `open(..., "w")` would give: 0o666 less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_folder_target(target: Path, what: str) -> None:
    """`target` must be a folder or not exist yet, inside a writable folder."""
    if target.exists() and not target.is_dir():
        raise InputError(f"{what} {target} is a file, not a folder")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what} {target}: cannot write in {parent}")


@contextmanager
def folder_lock(target: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `target` (a folder, existing or not) while the body runs."""
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{target.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise InputError(f"{what} {target} is in use by another run (pid {holder}); wait "
                             "for it to finish or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the lock file stays (removing it would race)


def foreign_entries(folder: Path, owned: Iterable[str]) -> list[str]:
    """Top-level entries of `folder` that are not in `owned` (what we must not delete)."""
    if not folder.is_dir():
        return []
    keep = set(owned)
    return sorted(e.name for e in folder.iterdir() if e.name not in keep)


def refuse_foreign(folder: Path, owned: Iterable[str], what: str) -> None:
    foreign = foreign_entries(folder, owned)
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise InputError(f"{what} {folder} holds files this program did not write ({shown}); "
                         "move them out or choose another folder")


def partial_dir(target: Path) -> Path:
    """Where a run writes before its folder is put in place (a sibling, same filesystem)."""
    return target.parent / f".{target.name}.partial"


def replace_folder(target: Path, new: Path) -> None:
    """Put the finished folder `new` in place of `target` and remove the old one."""
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    if old.exists():
        shutil.rmtree(old)


@contextmanager
def atomic_folder(target: Path, owned: Iterable[str], what: str,
                  fresh: Callable[[Path], bool] = lambda p: True) -> Iterator[Path]:
    """Yield a temporary sibling to fill; on success it replaces `target` whole.

    `fresh(partial)` says whether a partial folder left by an interrupted run must be
    cleared (True) or resumed from (False). On failure the partial folder stays for resume
    (or inspection); `target` is untouched.
    """
    refuse_foreign(target, owned, what)
    partial = partial_dir(target)
    if partial.exists() and fresh(partial):
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    yield partial
    replace_folder(target, partial)
