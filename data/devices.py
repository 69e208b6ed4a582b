"""Device choice shared by every stage: auto picks CUDA when there is one."""

from __future__ import annotations

import torch

from data.errors import ConfigError


def resolve_device(name: str | None, key: str = "device") -> torch.device:
    """None/"auto" -> cuda when available, else cpu; an unusable explicit choice is an error.

    `key` is the config key the value came from, so the message names what to change.
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"{key}={name!r}: not a device (use cpu, cuda, cuda:1)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name!r}: CUDA is not available on this machine")
    return device
