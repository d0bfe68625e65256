"""The training loops: the backbone (SGD, cosine schedule, augmentation), then IC-only
training of every head on the frozen backbone, and the inference helpers around them.

IC-only (Kaya et al. 2019, "Shallow-Deep Networks"): the backbone is frozen (eval mode, no
gradients, so weights and BatchNorm statistics stay bit-identical, see :func:`state_digest`)
and all heads are trained together from one backbone forward per batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hapi_dse.data import ImageSet, Splits
from hapi_dse.models.early_exit import EarlyExitNet
from hapi_dse.progress import Progress
from hapi_dse.training.config import TrainConfig
from hapi_dse.training.device import Accelerator
from hapi_dse.training.losses import exit_loss

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crop (zero-padded shift of up to ``pad`` pixels) and horizontal flip.

    The random draws come from ``gen`` on the CPU (the same on every device); the images
    are shifted where they are (a GPU's batch stays there)."""
    n, _, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad), value=float(x.min()))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(dev)
    rows = (dy.view(n, 1) + torch.arange(h, device=dev)).view(n, 1, h, 1)
    out = padded.gather(2, rows.expand(n, x.shape[1], h, w + 2 * pad))
    cols = (dx.view(n, 1) + torch.arange(w, device=dev)).view(n, 1, 1, w)
    out = out.gather(3, cols.expand(n, x.shape[1], h, w))
    flip = (torch.rand(n, generator=gen) < 0.5).to(dev)
    out[flip] = out[flip].flip(-1)
    return out


def _train_batches(
    images: ImageSet, batch: int, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch in an order drawn from ``gen``, a batch of images fetched (decoded) at a
    time."""
    labels = torch.from_numpy(images.labels)
    for idx in torch.randperm(len(images), generator=gen).split(batch):
        yield torch.from_numpy(images.take(idx.numpy())), labels[idx]


def _cosine(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / max(total_steps, 1)))
    )


class Precision:
    """The training steps on ``acc``'s device: batches moved there, autocast when it has a
    mixed-precision dtype, loss scaling for float16 (:mod:`~hapi_dse.training.device`). On
    the CPU every method is the plain float32 step."""

    def __init__(self, acc: Accelerator | None = None) -> None:
        acc = acc or Accelerator("cpu", "cpu")
        self.device = torch.device(acc.device)
        self.dtype = getattr(torch, acc.amp_dtype) if acc.amp_dtype else None
        self.scaler = torch.amp.GradScaler("cuda") if acc.amp_dtype == "float16" else None

    def to(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.device.type == "cpu" else x.to(self.device, non_blocking=True)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """Backward and optimiser step (gradients cleared before)."""
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def train_backbone(
    net: EarlyExitNet,
    data: Splits,
    cfg: TrainConfig,
    gen: torch.Generator,
    precision: Precision | None = None,
    *,
    progress: bool = True,
) -> list[dict[str, float]]:
    """The backbone alone (SGD, Nesterov, cosine schedule), one history row per epoch;
    ``progress``: a progress bar on a terminal."""
    run = precision or Precision()
    bb = net.backbone
    train = data.sets["train"]
    opt = torch.optim.SGD(
        bb.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True
    )
    steps = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
    sched = _cosine(opt, steps)
    history = []
    with Progress(steps, "backbone", show=progress) as bar:
        for epoch in range(cfg.epochs):
            bb.train()
            t0, total, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
            for xb, yb in _train_batches(train, cfg.batch_size, gen):
                xb, yb = run.to(xb), run.to(yb)
                if cfg.augment:
                    xb = _augment(xb, gen)
                xb = xb.contiguous(memory_format=torch.channels_last)
                with run.autocast():
                    logits = bb(xb)
                    loss = F.cross_entropy(logits, yb)
                run.step(loss, opt)
                sched.step()
                total += len(yb)
                correct += int((logits.argmax(1) == yb).sum())
                loss_sum += float(loss.detach()) * len(yb)
                bar.update(postfix=f"epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / total:.3f}")
            val_acc = _accuracy(bb, data.sets["val"])
            history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": loss_sum / total,
                    "train_acc": correct / total,
                    "val_acc": val_acc,
                    "seconds": time.perf_counter() - t0,
                }
            )
            log.info(
                "backbone epoch %d/%d: loss %.4f, train %.4f, val %.4f (%.0fs)",
                epoch + 1,
                cfg.epochs,
                loss_sum / total,
                correct / total,
                val_acc,
                history[-1]["seconds"],
            )
    return history


@torch.no_grad()
def _accuracy(module: nn.Module, images: ImageSet, batch: int = 500) -> float:
    module.eval()
    correct = 0
    device = _device(module)
    for x, y in images.batches(batch):
        xb = torch.from_numpy(x).contiguous(memory_format=torch.channels_last).to(device)
        correct += int((module(xb).argmax(1).cpu().numpy() == y).sum())
    return correct / max(len(images), 1)


def freeze(module: nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


def train_exits(
    net: EarlyExitNet,
    data: Splits,
    cfg: TrainConfig,
    gen: torch.Generator,
    precision: Precision | None = None,
    *,
    progress: bool = True,
) -> list[dict[str, float]]:
    """IC-only training: frozen backbone, every head trained from one forward per batch;
    ``progress``: a progress bar on a terminal."""
    run = precision or Precision()
    freeze(net.backbone)
    train = data.sets["train"]
    params = [p for p in net.heads.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.exit_lr, weight_decay=1e-4)
    steps = cfg.exit_epochs * math.ceil(len(train) / cfg.batch_size)
    sched = _cosine(opt, steps)
    cols = net.columns[:-1]
    history = []
    with Progress(steps, "exits", show=progress) as bar:
        for epoch in range(cfg.exit_epochs):
            net.heads.train()
            t0, total, loss_sum = time.perf_counter(), 0, 0.0
            for xb, yb in _train_batches(train, cfg.batch_size, gen):
                xb, yb = run.to(xb), run.to(yb)
                if cfg.augment:
                    xb = _augment(xb, gen)
                xb = xb.contiguous(memory_format=torch.channels_last)
                with run.autocast():
                    with torch.no_grad():
                        feats, final = net.backbone.forward_intermediates(xb)
                    loss = torch.stack(
                        [
                            exit_loss(net.heads[f"p{p}_{h}"](feats[p]), yb, final, cfg.distill)
                            for p, h in cols
                        ]
                    ).sum()
                run.step(loss, opt)
                sched.step()
                total += len(yb)
                loss_sum += float(loss.detach()) * len(yb) / len(cols)
                bar.update(
                    postfix=f"epoch {epoch + 1}/{cfg.exit_epochs} loss {loss_sum / total:.3f}"
                )
            history.append(
                {
                    "epoch": epoch + 1,
                    "mean_exit_loss": loss_sum / total,
                    "seconds": time.perf_counter() - t0,
                }
            )
            log.info(
                "exit epoch %d/%d: mean loss %.4f (%.0fs)",
                epoch + 1,
                cfg.exit_epochs,
                loss_sum / total,
                history[-1]["seconds"],
            )
    return history


@torch.no_grad()
def all_logits(net: EarlyExitNet, images: ImageSet, batch: int = 500) -> torch.Tensor:
    """Every column's logits ``(n, k, classes)`` for the images of a split, in order."""
    net.eval()
    outs = []
    device = _device(net)
    for x, _ in images.batches(batch):
        xb = torch.from_numpy(x).contiguous(memory_format=torch.channels_last).to(device)
        outs.append(net.all_logits(xb)[0].cpu())
    return torch.cat(outs)


def state_digest(module: nn.Module) -> str:
    """sha256 over every parameter and buffer (BatchNorm statistics included)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
