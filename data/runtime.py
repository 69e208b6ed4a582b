"""Where training runs: device choice and the optional `torchrun` process group.

One process needs no launcher. Under `torchrun --nproc_per_node=G` the environment carries
WORLD_SIZE/RANK/LOCAL_RANK; the group is then initialised here (NCCL on GPUs, Gloo on CPU)
and torn down again by whoever created it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from data.devices import resolve_device


@dataclass
class Runtime:
    """This process's place in the job and the device it computes on."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # True when this module created the process group

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def setup_runtime(device_name: str | None, key: str = "train.device") -> Runtime:
    """A single-process runtime, or join/create the process group torchrun describes."""
    world = env_world_size()
    if world <= 1:
        return Runtime(resolve_device(device_name, key))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, key)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, dist.get_rank(), dist.get_world_size(), owns)


def teardown_runtime(runtime: Runtime) -> None:
    """Wait for every rank, then destroy the group if this module created it."""
    if runtime.distributed and dist.is_initialized():
        dist.barrier()
        if runtime.owns_group:
            dist.destroy_process_group()
