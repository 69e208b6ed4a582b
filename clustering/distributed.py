"""What the ranks of a sharded fit exchange (torch.distributed; Gloo on CPU, NCCL on GPUs).

Each rank holds one shard of X. Everything DeepDPM decides is a function of sufficient
statistics (counts, sums, second moments) and of the mixture parameters, so a fit on
shards differs from a fit on all of X in a few places only: statistics are summed over
ranks (one all-reduce of a flat float64 tensor), the nets' gradients are averaged (DDP),
the random split/merge decisions and the start are taken on rank 0 and broadcast, and
labels are gathered in rank order. With one process every method here returns its input,
so a plain fit runs exactly as before.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from clustering.niw import Stats
from data.errors import InputError

GATHER_MAX_RANKS = 8  # above this, Gloo's all-reduce moves less data than an all-gather


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """Rows [start, stop) of rank's contiguous shard; shard sizes differ by at most one."""
    return rank * n // size, (rank + 1) * n // size


class World:
    """This process's part in a fit: its rank and the number of ranks (1: no collectives)."""

    def __init__(self, rank: int = 0, size: int = 1):
        self.rank, self.size = rank, size
        self._device = torch.device("cpu")
        if size > 1 and dist.get_backend() == "nccl":  # NCCL moves CUDA tensors only
            local = os.environ.get("LOCAL_RANK")
            self._device = torch.device("cuda", int(local) if local is not None
                                        else torch.cuda.current_device())

    @classmethod
    def current(cls) -> World:
        """The process group torchrun set up (and the caller initialised), or one process."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """A bare `cuda` means this rank's GPU (LOCAL_RANK) in a multi-process run."""
        if self.active and device.type == "cuda" and device.index is None:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return device

    # ------------------------------------------------------------------ reductions
    def _reduce(self, t: Tensor, op: Any) -> Tensor:
        if not self.active:
            return t
        buf = t.detach().to(self._device, copy=True)
        dist.all_reduce(buf, op=op)
        return buf.to(t.device)

    def sum(self, t: Tensor) -> Tensor:
        return self._reduce(t, dist.ReduceOp.SUM)

    def max(self, t: Tensor) -> Tensor:
        return self._reduce(t, dist.ReduceOp.MAX)

    def min(self, t: Tensor) -> Tensor:
        return self._reduce(t, dist.ReduceOp.MIN)

    def count(self, n: int) -> int:
        """The sum of a per-rank integer (e.g. the rows of X over all shards)."""
        return int(self.sum(torch.tensor(n, dtype=torch.int64))) if self.active else n

    def stats(self, stats: Stats) -> Stats:
        """Sufficient statistics summed over ranks: one all-reduce of (n, s, m2) flattened."""
        if not self.active:
            return stats
        g, dim = stats.s.shape
        flat = self.sum(torch.cat([stats.n.double(), stats.s.double().reshape(-1),
                                   stats.m2.double().reshape(-1)]))
        return Stats(flat[:g], flat[g:g + g * dim].view(g, dim),
                     flat[g + g * dim:].view(g, dim, dim))

    def data_parallel(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """`module` under DDP (gradients averaged over ranks in backward); one process: the
        module itself. On Gloo with few ranks the gradient bucket is all-gathered and summed
        in rank order instead of all-reduced: for these small nets Gloo's all-reduce is
        latency-bound (1.8 ms for 12k floats on 2 CPU processes, all-gather 0.5 ms)."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(module, device_ids=ids, gradient_as_bucket_view=True)
        if dist.get_backend() == "gloo" and self.size <= GATHER_MAX_RANKS:
            ddp.register_comm_hook(self.size, _gather_mean_hook)
        return ddp

    # ------------------------------------------------------------------ rank 0 decides
    def broadcast(self, t: Tensor) -> Tensor:
        """Rank 0's copy of t (same shape and dtype on every rank)."""
        if not self.active:
            return t
        buf = t.detach().to(self._device, copy=True)
        dist.broadcast(buf, src=0)
        return buf.to(t.device)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank `src`'s object (picklable; only ranks of this job send it)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src, device=self._device)
        return box[0]

    def sync_generator(self, generator: torch.Generator) -> None:
        """Give every rank rank 0's generator state, so later draws agree."""
        if self.active:
            generator.set_state(self.broadcast(generator.get_state()))

    def gather_rows(self, t: Tensor) -> Tensor:
        """The ranks' tensors concatenated along dim 0 in rank order, on every rank."""
        if not self.active:
            return t
        sizes = [int(s) for s in self._all_gather(torch.tensor([t.shape[0]]))]
        width = max(sizes)
        padded = t.new_zeros((width, *t.shape[1:]))
        padded[:t.shape[0]] = t
        parts = self._all_gather(padded)
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).to(t.device)

    def _all_gather(self, t: Tensor) -> list[Tensor]:
        buf = t.detach().to(self._device).contiguous()
        out = [torch.empty_like(buf) for _ in range(self.size)]
        dist.all_gather(out, buf)
        return out

    def gather_object(self, obj: Any) -> list[Any]:
        """Every rank's object, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def agree(self, error: Exception | None) -> None:
        """Raise on every rank when any rank failed (its shard was bad, its folder taken),
        so that no rank waits forever in the next collective."""
        if not self.active:
            if error is not None:
                raise error
            return
        failures = [(r, e) for r, e in enumerate(self.gather_object(
            None if error is None else _portable(error))) if e is not None]
        if not failures:
            return
        if error is not None:
            raise error
        rank, (kind, message) = failures[0]
        raise InputError(f"rank {rank}: {message}" if kind == "InputError"
                         else f"rank {rank} failed: {kind}: {message}")


def _gather_mean_hook(size, bucket):  # noqa: ANN001 - DDP checks real (not string) annotations
    """DDP comm hook (bucket: dist.GradBucket; returns a Future of the averaged tensor): the
    mean of the ranks' gradient buckets by all-gather; the sum runs in rank order, so every
    rank gets the same bits."""
    grad = bucket.buffer()
    parts = [torch.empty_like(grad) for _ in range(size)]
    fut = dist.all_gather(parts, grad, async_op=True).get_future()
    return fut.then(lambda _: torch.stack(parts).sum(0).div_(size))


def _portable(error: Exception) -> tuple[str, str]:
    """(class name, message): what other ranks need to report the failure, always picklable."""
    return ("InputError" if isinstance(error, InputError) else type(error).__name__,
            str(error))
