"""``hapi train``: the backbone first, then IC-only training of every head at every position.

IC-only (Kaya et al. 2019, "Shallow-Deep Networks"): the backbone is frozen (eval mode, no
gradients, so weights and BatchNorm statistics stay bit-identical) and all heads are trained
together from one backbone forward per batch. Temperatures are then fitted per exit on val,
and the statistics of every exit are cached for val and test.

This module runs the steps and writes the run directory; the settings are
:mod:`~hapi_dse.training.config`, the loops :mod:`~hapi_dse.training.loops`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hapi_dse.atomic import write_json, write_text
from hapi_dse.csvio import csv_text
from hapi_dse.data import Splits, load_splits
from hapi_dse.errors import ArtefactError
from hapi_dse.exit_stats import ExitStats
from hapi_dse.models.backbones import load_backbone_state
from hapi_dse.models.early_exit import (
    EarlyExitNet,
    architecture_spec,
    build,
    weights_identity,
)
from hapi_dse.outdirs import atomic_dir, check_out_dir
from hapi_dse.provenance import provenance, sha256_file
from hapi_dse.readers import torch_load_weights
from hapi_dse.run import STATS_KEY
from hapi_dse.training.calibration import exit_statistics, fit_temperatures, nll_per_column
from hapi_dse.training.config import TrainConfig
from hapi_dse.training.device import select_accelerator
from hapi_dse.training.flops import flops_table
from hapi_dse.training.loops import (
    Precision,
    all_logits,
    seed_everything,
    state_digest,
    train_backbone,
    train_exits,
)

__all__ = ["TrainConfig", "summary_table", "train"]


def _load_init(net: EarlyExitNet, path: Path) -> None:
    """``--init``: a state dict of the backbone (a run's ``weights.pt`` works too), or of the
    user's own module that the backbone was split from (its keys, as saved by
    ``torch.save(model.state_dict(), PATH)``); see :func:`load_backbone_state`."""
    how = "save it with torch.save(model.state_dict(), PATH)"
    try:
        state = torch_load_weights(path)
    except Exception as e:  # any unreadable checkpoint is a user error here
        raise ArtefactError(
            f"--init {path}: cannot load a state dict ({type(e).__name__}); {how}"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ArtefactError(
            f"--init {path}: holds a {type(state).__name__}, not a state dict "
            f"(parameter name -> tensor); {how}"
        )
    if any(k.startswith("backbone.") for k in state):  # a run's weights.pt
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    load_backbone_state(net.backbone, state, f"--init {path}")


@dataclass
class _Calibrated:
    """Per-exit temperatures fitted on val, the val NLL before and after, and the exit
    statistics of val and test under those temperatures."""

    temps: np.ndarray
    nll_before: torch.Tensor
    nll_after: torch.Tensor
    stats: dict[str, ExitStats]


def train(cfg: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run the whole training and write the run directory ``cfg.out`` atomically.

    Steps: prepare (seed, data, network), train the backbone then the exits, calibrate and
    cache the exit statistics, describe the run (``model.json``, ``train.json``), write it.
    Returns ``train.json``. ``progress``: progress bars on a terminal (not a setting of the
    run: train.json does not record it).
    """
    cfg.validate()
    acc = select_accelerator(cfg.accelerator, cfg.amp)
    check_out_dir(cfg.out, "run", cfg.overwrite)  # before training, not after it
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    data = load_splits(
        cfg.dataset,
        data_dir=cfg.data_dir,
        seed=cfg.seed,
        limit=cfg.limit,
        image_size=cfg.image_size,
        channels=cfg.channels,
    )
    arch = architecture_spec(
        cfg.backbone, cfg.backbone_kwargs, cfg.heads, data.input_shape, data.num_classes
    )
    net = build(arch).to(acc.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    timings: dict[str, float] = {}
    history, digest = _train_network(net, data, cfg, timings, Precision(acc), progress)
    t = time.perf_counter()
    cal = _calibrate(net, data)
    timings["statistics_s"] = time.perf_counter() - t
    net = net.to("cpu", memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    model_json = _model_json(cfg, arch, data, net, cal.temps)
    timings["total_s"] = time.perf_counter() - t_start
    train_json = _train_json(cfg, data, net.columns, cal, history, digest, timings)
    train_json["accelerator"] = acc.to_dict()
    _refuse_diverged(model_json, train_json)
    _write_run(cfg, net, arch, data.input_shape, model_json, train_json, cal.stats)
    return train_json


def _train_network(
    net: EarlyExitNet,
    data: Splits,
    cfg: TrainConfig,
    timings: dict[str, float],
    precision: Precision,
    progress: bool = True,
) -> tuple[dict[str, list[dict[str, float]]], str]:
    """The backbone (``--init`` and/or trained), then IC-only training of the exits.

    Returns the histories and the backbone's digest, checked unchanged by the exit training.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    t = time.perf_counter()
    if cfg.init is not None:
        _load_init(net, Path(cfg.init))
    backbone_history = (
        train_backbone(net, data, cfg, gen, precision, progress=progress) if cfg.epochs > 0 else []
    )
    timings["backbone_s"] = time.perf_counter() - t

    before = state_digest(net.backbone)
    t = time.perf_counter()
    exit_history = train_exits(net, data, cfg, gen, precision, progress=progress)
    timings["exits_s"] = time.perf_counter() - t
    after = state_digest(net.backbone)
    assert before == after, "IC-only training changed the frozen backbone"
    return {"backbone": backbone_history, "exits": exit_history}, after


def _calibrate(net: EarlyExitNet, data: Splits) -> _Calibrated:
    """Fit one temperature per column on val; cache the statistics of val and test."""
    logits = {s: all_logits(net, data.sets[s]) for s in ("val", "test")}
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
        STATS_KEY: None,  # binds the exit statistics to this training, set once written
        "arch": arch,
        "dataset": data.name,  # a folder's or .npz's absolute path: hapi eval reads it
        "classes": list(data.classes),
        "normalization": {"mean": list(data.mean), "std": list(data.std)},  # per channel
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
    prov = provenance(seed=cfg.seed, inputs=inputs, settings=settings, libraries=("torch", "numpy"))
    if data.identity is not None:  # an image folder or .npz: path, file count, content hash
        prov["inputs"]["dataset"] = data.identity
    return {
        **prov,
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


def _non_finite(doc: Any, where: str = "") -> str | None:
    """The key path of the first NaN or infinite number in ``doc`` (``None``: none)."""
    if isinstance(doc, float):
        return None if math.isfinite(doc) else where
    if isinstance(doc, dict):
        items: Any = doc.items()
    elif isinstance(doc, list | tuple):
        items = enumerate(doc)
    else:
        return None
    for k, v in items:
        bad = _non_finite(v, f"{where}.{k}" if where else str(k))
        if bad is not None:
            return bad
    return None


def _refuse_diverged(model_json: dict[str, Any], train_json: dict[str, Any]) -> None:
    """A training that diverged (a NaN loss, infinite temperatures) writes nothing: its run
    would be refused by every reader, and JSON has no NaN."""
    for name, doc in (("model.json", model_json), ("train.json", train_json)):
        bad = _non_finite(doc)
        if bad is not None:
            raise ArtefactError(
                f"the training diverged: {name} {bad} is not a finite number; nothing was "
                "written: lower --lr or --exit-lr and train again"
            )


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
        stats["val"].save(tmp / "exits_val.npz")
        stats["test"].save(tmp / "exits_test.npz")
        model_json[STATS_KEY] = {s: sha256_file(tmp / f"exits_{s}.npz") for s in ("val", "test")}
        write_json(tmp / "model.json", model_json)
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
