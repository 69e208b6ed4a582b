"""DataLoaders, and one-line errors from images that fail inside worker processes.

A worker's exception reaches the main process re-raised with the whole worker traceback
as its message; `batches` restores the original one-line message (e.g. naming a corrupt
file) so the CLI can print it as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from data.errors import DeepDPMError


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, drop_last: bool,
                num_workers: int, device: torch.device, seed: int = 0,
                sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader with seeded shuffling and pinned memory on CUDA."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        drop_last=drop_last, num_workers=num_workers, generator=generator,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )


def _original_message(exc: DeepDPMError) -> str:
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    name = f"{type(exc).__name__}: "
    return last.split(name, 1)[1] if name in last else last


def batches(loader: Iterable[Any]) -> Iterator[Any]:
    """Iterate a loader, re-raising project errors from workers with their own message."""
    try:
        yield from loader
    except DeepDPMError as exc:
        message = _original_message(exc)
        if message == str(exc):
            raise
        raise type(exc)(message) from None
