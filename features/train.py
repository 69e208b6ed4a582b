"""MoCo v2 training: a query encoder learns, a momentum (key) encoder follows it.

The loss is lightly's NTXentLoss with a memory bank of earlier keys as negatives. The
learning rate follows a cosine (after an optional warm-up) and the key encoder's EMA
momentum a cosine from `momentum_start` to `momentum_end`, both per step. After every
epoch `out_dir/last.pt` is rewritten atomically, so an interrupted run resumes from the
last finished epoch; `out_dir/checkpoint.pt` is written at the end. Under `torchrun` the
query encoder is wrapped in DDP, the data is sharded, negatives are gathered from every
rank and only rank 0 writes.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from lightly.loss import NTXentLoss
from lightly.models.utils import (
    batch_shuffle,
    batch_unshuffle,
    deactivate_requires_grad,
    update_momentum,
)
from lightly.utils.scheduler import cosine_schedule
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from data.config import to_container
from data.errors import InputError
from data.files import save_torch
from data.records import EpochCallback, EpochRecord
from data.runtime import Runtime, setup_runtime, teardown_runtime
from data.sources import build_dataset, default_image_size
from features.checkpoint import load_checkpoint
from features.config import as_config
from features.loader import batches, make_loader
from features.models import build_encoder, use_small_stem
from features.transforms import train_transform


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up, then a cosine from 1 to `min_ratio` over the remaining steps."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return cosine_schedule(min(step - warmup, span), span, 1.0, min_ratio)


def _optimizer(cfg: DictConfig, params: Any) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.sgd_momentum, weight_decay=t.weight_decay)


def _amp_dtype(rt: Runtime, enabled: bool) -> torch.dtype | None:
    if not enabled or rt.device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class MoCoTrainer:
    """Holds the two encoders, the loss with its memory bank and the optimiser state."""

    def __init__(self, cfg: DictConfig, rt: Runtime, in_channels: int, image_size: int,
                 steps_per_epoch: int) -> None:
        t = cfg.train
        self.cfg, self.rt = cfg, rt
        self.meta = {"in_channels": in_channels, "image_size": image_size,
                     "small_images": use_small_stem(cfg.model.small_images, image_size)}
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.encoder = build_encoder(cfg.model, in_channels, image_size)
        self.encoder.to(rt.device, memory_format=self.memory_format)
        self.momentum = copy.deepcopy(self.encoder)
        deactivate_requires_grad(self.momentum)
        self.query: nn.Module = self.encoder
        if rt.distributed:
            ids = [rt.device.index] if rt.device.type == "cuda" else None
            self.query = nn.parallel.DistributedDataParallel(self.encoder, device_ids=ids)
        bank = (t.memory_bank_size, self.encoder.output_dim) if t.memory_bank_size else 0
        self.criterion = NTXentLoss(temperature=t.temperature, memory_bank_size=bank,
                                    gather_distributed=rt.distributed).to(rt.device)
        self.optimizer = _optimizer(cfg, self.encoder.parameters())
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = t.epochs * steps_per_epoch
        if t.max_steps:
            self.total_steps = min(self.total_steps, t.max_steps)
        warmup = round(t.warmup_epochs * steps_per_epoch)
        total, ratio = self.total_steps, t.min_lr_ratio
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup, total, ratio))
        self.amp_dtype = _amp_dtype(rt, t.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.epoch = 0
        self.step = 0

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _keys(self, x_key: torch.Tensor) -> torch.Tensor:
        """Momentum-encoder outputs.

        Under DDP the batch is shuffled across processes (MoCo's shuffle-BN), so a key's BN
        statistics come from other images than its query's; on one process the shuffle
        changes nothing.
        """
        with torch.no_grad():
            shuffled, order = batch_shuffle(x_key, distributed=self.rt.distributed)
            return batch_unshuffle(self.momentum(shuffled), order,
                                   distributed=self.rt.distributed)

    def train_step(self, x_query: torch.Tensor, x_key: torch.Tensor) -> torch.Tensor:
        """One MoCo step: EMA update, keys from the momentum encoder, loss, SGD step.

        With `train.symmetric` both views serve as query and as key (as lightly's MoCo
        benchmarks do). The two directions go through the encoders as one batch, so the
        bank gets both views' keys only after the loss, never a key of a query's own image;
        BN then sees both views of each image in one batch, as in SimCLR.
        """
        m = cosine_schedule(self.step, max(1, self.total_steps), self.cfg.train.momentum_start,
                            self.cfg.train.momentum_end)
        update_momentum(self.encoder, self.momentum, m)
        dev, fmt = self.rt.device, self.memory_format
        x_query = x_query.to(dev, non_blocking=True, memory_format=fmt)
        x_key = x_key.to(dev, non_blocking=True, memory_format=fmt)
        if self.cfg.train.symmetric:
            x_query, x_key = torch.cat([x_query, x_key]), torch.cat([x_key, x_query])
        with self._autocast():
            query = self.query(x_query)
            key = self._keys(x_key)
        loss = self.criterion(query.float(), key.float())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return loss.detach()

    def state(self) -> dict[str, Any]:
        bank = self.criterion.memory_bank
        return {
            "model": self.encoder.state_dict(),
            "momentum_model": self.momentum.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "memory_bank": {"bank": bank.bank.cpu(), "ptr": bank.bank_ptr.cpu()},
            "epoch": self.epoch,
            "global_step": self.step,
            "config": to_container(self.cfg),
            "meta": self.meta,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["model"])
        self.momentum.load_state_dict(state["momentum_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state.get("scaler", {}))
        bank = self.criterion.memory_bank
        saved = state.get("memory_bank", {})
        if "bank" in saved and saved["bank"].shape == bank.bank.shape:
            bank.bank.copy_(saved["bank"])
            bank.bank_ptr.copy_(saved["ptr"])
        self.epoch, self.step = int(state["epoch"]), int(state["global_step"])


def _resume(trainer: MoCoTrainer, path: Path) -> None:
    state = load_checkpoint(path, trainer.rt.device)
    saved, now = state.get("meta", {}), trainer.meta
    if saved and saved != now:
        raise InputError(f"{path}: was trained with {saved}, the config now gives {now}; "
                         "use another --out directory or delete the file to start afresh")
    try:
        trainer.load(state)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: does not match the model config ({str(exc).splitlines()[0]});"
                         " use another --out directory or delete the file") from exc


def _epoch(trainer: MoCoTrainer, loader: Any, progress: bool) -> EpochRecord:
    """Train one epoch (or up to the step budget); return its record."""
    cfg, rt = trainer.cfg, trainer.rt
    n_steps = min(trainer.steps_per_epoch, trainer.total_steps - trainer.step)
    bar = tqdm(total=n_steps, desc=f"epoch {trainer.epoch + 1}/{cfg.train.epochs}",
               disable=not (progress and rt.is_main), leave=False, dynamic_ncols=True)
    total_loss = torch.zeros((), device=rt.device)
    start, images, done = time.perf_counter(), 0, 0
    lr = trainer.optimizer.param_groups[0]["lr"]
    for (x_query, x_key), _, _ in batches(loader):
        total_loss += trainer.train_step(x_query, x_key)
        images += x_query.shape[0] * rt.world_size
        done += 1
        if done % 10 == 0 or done == n_steps:
            rate = images / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{total_loss.item() / done:.3f}", img_s=f"{rate:.0f}")
        bar.update()
        if done >= n_steps:
            break
    bar.close()
    trainer.epoch += 1
    seconds = time.perf_counter() - start
    return {"epoch": trainer.epoch, "loss": total_loss.item() / max(done, 1), "lr": lr,
            "images_per_s": images / max(seconds, 1e-9), "steps": done,
            "global_step": trainer.step, "seconds": seconds}


def train_moco(cfg: Any, out_dir: Path, progress: bool = True,
               on_epoch: EpochCallback | None = None) -> Path:
    """Train MoCo as `cfg` says; resume from `out_dir/last.pt`; return the checkpoint path."""
    cfg = as_config(cfg)
    out_dir = Path(out_dir)
    rt = setup_runtime(cfg.train.device)
    try:
        return _train(cfg, out_dir, progress, on_epoch, rt)
    finally:
        teardown_runtime(rt)


def _train(cfg: DictConfig, out_dir: Path, progress: bool, on_epoch: EpochCallback | None,
           rt: Runtime) -> Path:
    torch.manual_seed(cfg.train.seed + rt.rank)
    image_size = default_image_size(cfg.data)
    dataset = build_dataset(cfg.data)
    dataset.transform = train_transform(cfg.augment, image_size, dataset.channels)
    per_rank = len(dataset) // rt.world_size
    if per_rank < 2:
        raise InputError(f"the data set has {len(dataset)} images; MoCo needs at least 2 per "
                         "process")
    batch_size = min(cfg.train.batch_size, per_rank)
    sampler = (DistributedSampler(dataset, shuffle=True, seed=cfg.train.seed, drop_last=True)
               if rt.distributed else None)
    loader = make_loader(dataset, batch_size, shuffle=True, drop_last=True, sampler=sampler,
                         num_workers=cfg.train.num_workers, device=rt.device,
                         seed=cfg.train.seed)
    trainer = MoCoTrainer(cfg, rt, dataset.channels, image_size, per_rank // batch_size)
    last, final = out_dir / "last.pt", out_dir / "checkpoint.pt"
    if last.is_file():
        _resume(trainer, last)
    while trainer.epoch < cfg.train.epochs and trainer.step < trainer.total_steps:
        if sampler is not None:
            sampler.set_epoch(trainer.epoch)
        loader.generator.manual_seed(cfg.train.seed + trainer.epoch)
        record = _epoch(trainer, loader, progress)
        if rt.is_main:
            save_torch(last, trainer.state())
            if progress:
                tqdm.write(f"epoch {record['epoch']}/{cfg.train.epochs}  loss "
                           f"{record['loss']:.4f}  {record['images_per_s']:.0f} img/s")
            if on_epoch is not None:
                on_epoch(record)
        if not math.isfinite(record["loss"]):
            raise InputError(f"the loss became {record['loss']} in epoch {record['epoch']}; "
                             "lower train.lr or raise train.temperature")
    if rt.is_main:
        save_torch(final, trainer.state())
    return final

