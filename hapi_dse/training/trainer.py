"""``hapi train``: the backbone first, then IC-only training of every head at every position.

IC-only (Kaya et al. 2019, "Shallow-Deep Networks"): the backbone is frozen (eval mode, no
gradients, so weights and BatchNorm statistics stay bit-identical) and all heads are trained
together from one backbone forward per batch. Temperatures are then fitted per exit on val,
and the statistics of every exit are cached for val and test.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hapi_dse.atomic import write_json, write_text
from hapi_dse.csvio import csv_text
from hapi_dse.data import Splits, load_splits
from hapi_dse.errors import ArtefactError, UsageError, first_line
from hapi_dse.exit_stats import ExitStats
from hapi_dse.models.backbones import BACKBONES
from hapi_dse.models.early_exit import (
    EarlyExitNet,
    architecture_spec,
    build,
    weights_identity,
)
from hapi_dse.models.heads import HEADS
from hapi_dse.outdirs import atomic_dir, check_out_dir
from hapi_dse.progress import Progress
from hapi_dse.provenance import provenance
from hapi_dse.training.calibration import exit_statistics, fit_temperatures, nll_per_column
from hapi_dse.training.flops import flops_table
from hapi_dse.training.losses import Distill, exit_loss

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    out: Path
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    backbone: str = "resnet32"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    heads: tuple[str, ...] = ("linear", "conv", "mlp")
    epochs: int = 20
    exit_epochs: int = 8
    batch_size: int = 128
    lr: float = 0.1
    exit_lr: float = 2e-3
    weight_decay: float = 5e-4
    distill: Distill | None = None
    init: Path | None = None
    augment: bool = True
    seed: int = 0
    threads: int | None = None
    limit: int | None = None
    overwrite: bool = False  # replace a previous run in ``out``

    def validate(self) -> None:
        if ":" not in self.backbone and self.backbone not in BACKBONES:
            BACKBONES.get(self.backbone)  # raises the 'unknown backbone' error
        for h in self.heads:
            HEADS.get(h)
        if not self.heads:
            raise UsageError("--heads: expected at least one head type")
        if self.epochs < 0 or self.exit_epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UsageError(
                "--epochs >= 0, --exit-epochs >= 1, --batch-size >= 1 and --lr > 0 must hold"
            )
        for flag, rate in (("--lr", self.lr), ("--exit-lr", self.exit_lr)):
            if not (math.isfinite(rate) and rate > 0):  # NaN passes 'rate <= 0'
                raise UsageError(
                    f"{flag} {rate}: a learning rate must be a finite number > 0, e.g. "
                    f"{flag} {0.1 if flag == '--lr' else 0.002}"
                )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UsageError(f"weight decay {self.weight_decay}: must be a finite number >= 0")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit {self.limit}: expected a number of images >= 1")
        if self.init is None and self.epochs == 0:
            raise UsageError("--epochs 0 needs --init CHECKPOINT (a trained backbone)")
        if self.init is not None and not Path(self.init).is_file():
            raise UsageError(f"--init {self.init}: no such file")


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crop (zero-padded shift of up to ``pad`` pixels) and horizontal flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=float(x.min()))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def _batches(n: int, batch: int, gen: torch.Generator | None) -> list[torch.Tensor]:
    idx = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    return list(idx.split(batch))


def _cosine(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / max(total_steps, 1)))
    )


def train_backbone(
    net: EarlyExitNet, data: Splits, cfg: TrainConfig, gen: torch.Generator
) -> list[dict[str, float]]:
    bb = net.backbone
    x, y = torch.from_numpy(data.x["train"]), torch.from_numpy(data.y["train"])
    opt = torch.optim.SGD(
        bb.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True
    )
    steps = cfg.epochs * math.ceil(len(y) / cfg.batch_size)
    sched = _cosine(opt, steps)
    history = []
    with Progress(steps, "backbone") as bar:
        for epoch in range(cfg.epochs):
            bb.train()
            t0, total, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
            for idx in _batches(len(y), cfg.batch_size, gen):
                xb, yb = x[idx], y[idx]
                if cfg.augment:
                    xb = _augment(xb, gen)
                logits = bb(xb.contiguous(memory_format=torch.channels_last))
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += len(yb)
                correct += int((logits.argmax(1) == yb).sum())
                loss_sum += float(loss.detach()) * len(yb)
                bar.update(postfix=f"epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / total:.3f}")
            val_acc = _accuracy(bb, data.x["val"], data.y["val"])
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
def _accuracy(module: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    module.eval()
    correct = 0
    for i in range(0, len(y), batch):
        xb = torch.from_numpy(x[i : i + batch]).contiguous(memory_format=torch.channels_last)
        correct += int((module(xb).argmax(1).numpy() == y[i : i + batch]).sum())
    return correct / max(len(y), 1)


def freeze(module: nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


def train_exits(
    net: EarlyExitNet, data: Splits, cfg: TrainConfig, gen: torch.Generator
) -> list[dict[str, float]]:
    """IC-only training: frozen backbone, every head trained from one forward per batch."""
    freeze(net.backbone)
    x, y = torch.from_numpy(data.x["train"]), torch.from_numpy(data.y["train"])
    params = [p for p in net.heads.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.exit_lr, weight_decay=1e-4)
    steps = cfg.exit_epochs * math.ceil(len(y) / cfg.batch_size)
    sched = _cosine(opt, steps)
    cols = net.columns[:-1]
    history = []
    with Progress(steps, "exits") as bar:
        for epoch in range(cfg.exit_epochs):
            net.heads.train()
            t0, total, loss_sum = time.perf_counter(), 0, 0.0
            for idx in _batches(len(y), cfg.batch_size, gen):
                xb, yb = x[idx], y[idx]
                if cfg.augment:
                    xb = _augment(xb, gen)
                with torch.no_grad():
                    feats, final = net.backbone.forward_intermediates(
                        xb.contiguous(memory_format=torch.channels_last)
                    )
                loss = torch.stack(
                    [
                        exit_loss(net.heads[f"p{p}_{h}"](feats[p]), yb, final, cfg.distill)
                        for p, h in cols
                    ]
                ).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
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
def all_logits(net: EarlyExitNet, x: np.ndarray, batch: int = 500) -> torch.Tensor:
    net.eval()
    outs = []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i : i + batch]).contiguous(memory_format=torch.channels_last)
        outs.append(net.all_logits(xb)[0])
    return torch.cat(outs)


def state_digest(module: nn.Module) -> str:
    """sha256 over every parameter and buffer (BatchNorm statistics included)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _load_init(net: EarlyExitNet, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable checkpoint is a user error here
        raise ArtefactError(
            f"--init {path}: cannot load a state dict ({type(e).__name__})"
        ) from None
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    try:
        net.backbone.load_state_dict(state)
    except RuntimeError as e:
        raise ArtefactError(f"--init {path}: does not fit the backbone ({first_line(e)})") from None


@dataclass
class _Calibrated:
    """Per-exit temperatures fitted on val, the val NLL before and after, and the exit
    statistics of val and test under those temperatures."""

    temps: np.ndarray
    nll_before: torch.Tensor
    nll_after: torch.Tensor
    stats: dict[str, ExitStats]


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run the whole training and write the run directory ``cfg.out`` atomically.

    Steps: prepare (seed, data, network), train the backbone then the exits, calibrate and
    cache the exit statistics, describe the run (``model.json``, ``train.json``), write it.
    Returns ``train.json``.
    """
    cfg.validate()
    check_out_dir(cfg.out, "run", cfg.overwrite)  # before training, not after it
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    data = load_splits(cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seed, limit=cfg.limit)
    arch = architecture_spec(
        cfg.backbone, cfg.backbone_kwargs, cfg.heads, data.input_shape, data.num_classes
    )
    net = build(arch).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    timings: dict[str, float] = {}
    history, digest = _train_network(net, data, cfg, timings)
    t = time.perf_counter()
    cal = _calibrate(net, data)
    timings["statistics_s"] = time.perf_counter() - t
    net = net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    model_json = _model_json(cfg, arch, data, net, cal.temps)
    timings["total_s"] = time.perf_counter() - t_start
    train_json = _train_json(cfg, data, net.columns, cal, history, digest, timings)
    _write_run(cfg, net, arch, data.input_shape, model_json, train_json, cal.stats)
    return train_json


def _train_network(
    net: EarlyExitNet, data: Splits, cfg: TrainConfig, timings: dict[str, float]
) -> tuple[dict[str, list[dict[str, float]]], str]:
    """The backbone (``--init`` and/or trained), then IC-only training of the exits.

    Returns the histories and the backbone's digest, checked unchanged by the exit training.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    t = time.perf_counter()
    if cfg.init is not None:
        _load_init(net, Path(cfg.init))
    backbone_history = train_backbone(net, data, cfg, gen) if cfg.epochs > 0 else []
    timings["backbone_s"] = time.perf_counter() - t

    before = state_digest(net.backbone)
    t = time.perf_counter()
    exit_history = train_exits(net, data, cfg, gen)
    timings["exits_s"] = time.perf_counter() - t
    after = state_digest(net.backbone)
    assert before == after, "IC-only training changed the frozen backbone"
    return {"backbone": backbone_history, "exits": exit_history}, after


def _calibrate(net: EarlyExitNet, data: Splits) -> _Calibrated:
    """Fit one temperature per column on val; cache the statistics of val and test."""
    logits = {s: all_logits(net, data.x[s]) for s in ("val", "test")}
    labels = {s: torch.from_numpy(data.y[s]) for s in ("val", "test")}
    ones = torch.ones(logits["val"].shape[1], dtype=torch.float64)
    nll_before = nll_per_column(logits["val"].double(), labels["val"], ones)
    temps = fit_temperatures(logits["val"], labels["val"])
    nll_after = nll_per_column(
        logits["val"].double(), labels["val"], torch.as_tensor(temps).double()
    )
    columns = net.columns
    position = np.array([p for p, _ in columns], dtype=np.int32)
    head = np.array([h for _, h in columns], dtype="U16")
    stats = {}
    for s in ("val", "test"):
        conf, ent, pred = exit_statistics(logits[s], temps)
        stats[s] = ExitStats(data.y[s].astype(np.int16), conf, ent, pred, position, head)
    return _Calibrated(temps, nll_before, nll_after, stats)


def _model_json(
    cfg: TrainConfig, arch: dict[str, Any], data: Splits, net: EarlyExitNet, temps: np.ndarray
) -> dict[str, Any]:
    """``model.json`` (DESIGN 2.1), its identity left to fill once ``weights.pt`` exists."""
    return {
        "schema_version": 1,
        # the training's identity: both cover the weights, set once weights.pt is written
        "model_id": None,
        "weights_sha256": None,
        "arch": arch,
        "dataset": cfg.dataset,
        "classes": list(data.classes),
        "normalization": {"mean": data.mean, "std": data.std},
        "exits": [e.to_dict() for e in net.backbone.exits],
        "columns": [{"position": p, "head": h} for p, h in net.columns],
        "temperatures": [float(t) for t in temps],
    }


def _train_json(
    cfg: TrainConfig,
    data: Splits,
    columns: list[tuple[int, str]],
    cal: _Calibrated,
    history: dict[str, list[dict[str, float]]],
    digest: str,
    timings: dict[str, float],
) -> dict[str, Any]:
    """``train.json``: provenance, per-exit accuracy and calibration, histories, timings."""
    accuracy = {s: cal.stats[s].correct.mean(0) for s in ("val", "test")}
    per_exit = [
        {
            "position": int(p),
            "head": str(h),
            "temperature": float(cal.temps[j]),
            "val_acc": float(accuracy["val"][j]),
            "test_acc": float(accuracy["test"][j]),
            "val_nll_before": float(cal.nll_before[j]),
            "val_nll_after": float(cal.nll_after[j]),
        }
        for j, (p, h) in enumerate(columns)
    ]
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    inputs = {k: v for k, v in data.files.items()}
    if cfg.init is not None:
        inputs["init"] = Path(cfg.init)
    return {
        **provenance(seed=cfg.seed, inputs=inputs, settings=settings, libraries=("torch", "numpy")),
        "model_id": None,
        "weights_sha256": None,
        "splits": {s: len(data.y[s]) for s in ("train", "val", "test")},
        "backbone_test_acc": float(accuracy["test"][-1]),
        "backbone_val_acc": float(accuracy["val"][-1]),
        "backbone_digest": digest,
        "per_exit": per_exit,
        "history": history,
        "timings": timings,
    }


def _write_run(
    cfg: TrainConfig,
    net: EarlyExitNet,
    arch: dict[str, Any],
    input_shape: tuple[int, ...],
    model_json: dict[str, Any],
    train_json: dict[str, Any],
    stats: dict[str, ExitStats],
) -> None:
    """Write the run directory atomically; the identity comes from the saved weights."""
    with atomic_dir(cfg.out, kind="run", overwrite=cfg.overwrite) as tmp:
        torch.save(net.state_dict(), tmp / "weights.pt")
        mid, digest = weights_identity(arch, tmp / "weights.pt")  # of the file saved
        model_json["model_id"] = train_json["model_id"] = mid
        model_json["weights_sha256"] = train_json["weights_sha256"] = digest
        write_json(tmp / "model.json", model_json)
        stats["val"].save(tmp / "exits_val.npz")
        stats["test"].save(tmp / "exits_test.npz")
        write_text(tmp / "flops.csv", csv_text(flops_table(net, input_shape)))
        write_json(tmp / "train.json", train_json)


def summary_table(train_json: dict[str, Any]) -> str:
    """Accuracy per position (rows) and head (columns), val / test."""
    rows = train_json["per_exit"]
    heads = [h for h in dict.fromkeys(r["head"] for r in rows) if h != "final"]
    positions = sorted({r["position"] for r in rows if r["head"] != "final"})
    acc = {(r["position"], r["head"]): r for r in rows}
    w = 13
    lines = ["pos " + "".join(f"{h:>{w}}" for h in heads) + "   (val / test accuracy, %)"]
    for p in positions:
        cells = "".join(
            f"{100 * acc[p, h]['val_acc']:>6.1f}/{100 * acc[p, h]['test_acc']:<6.1f}" for h in heads
        )
        lines.append(f"{p:>3} {cells}")
    fin = rows[-1]
    lines.append(
        f"final (backbone): val {100 * fin['val_acc']:.2f} %, test {100 * fin['test_acc']:.2f} %"
    )
    return "\n".join(lines)
