"""``hapi eval``: run an export with onnxruntime and set the measurement beside the prediction.

Measured: accuracy, exit histogram and per-sample latency (each sample one timed call,
``time.perf_counter_ns``, after ``warmup`` untimed calls; mean, p50, p90, p99). Predicted:
the same figures from the cost model on the run's exit statistics of the same split and
this machine's profile table (``--device``, default ``host``: ``hapi profile --device host
--model RUN``). Also: the share of samples whose exit and class agree with the cost model's
simulation (the fidelity of the exported decisions). Percentiles use numpy's
``inverted_cdf``, as the cost model does.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.errors import ArtefactError, HapiError, UsageError
from hapi_dse.progress import Progress

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
LATENCY_KEYS = ("mean", "p50", "p90", "p99")


@dataclass
class EvalConfig:
    model: Path  # an exported .onnx, or a staged export directory
    run: str | None = None  # run directory; default: the one recorded in the export
    dataset: str | None = None
    split: str = "test"
    data_dir: str | None = None
    device: str = "host"
    profiles: str | None = None
    threads: int = 1
    limit: int | None = None
    warmup: int = 50
    seed: int = 0


@dataclass
class Export:
    """An opened export: how to run one sample, and what it holds."""

    path: Path
    fmt: str
    meta: dict[str, Any]
    runner: Any  # callable x -> (logits, exit_index)


def open_export(path: str | Path, threads: int = 1) -> Export:
    """Open a single-graph ``.onnx`` export or a staged export directory."""
    p = Path(path)
    if p.is_dir() or p.name == "manifest.json":
        root = p if p.is_dir() else p.parent
        if not (root / "manifest.json").is_file():
            raise ArtefactError(
                f"{root}: no manifest.json; not a 'hapi export --format staged' directory"
            )
        from hapi_dse.deploy.export import load_runtime

        meta = json.loads((root / "manifest.json").read_text())
        side = root / "export.json"
        if side.is_file():
            meta = {**json.loads(side.read_text()), **meta}
        staged = load_runtime(root).StagedModel(root, threads=threads)
        return Export(root, "staged", meta, staged.run)
    if not p.is_file():
        raise ArtefactError(f"{p}: no such file (expected a .onnx from 'hapi export')")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtefactError(f"{p}: onnxruntime cannot load it ({first})") from None
    props = sess.get_modelmeta().custom_metadata_map
    meta = {}
    for k, v in props.items():
        if k.startswith("hapi."):
            try:
                meta[k[5:]] = json.loads(v)
            except json.JSONDecodeError:
                meta[k[5:]] = v
    if "design" not in meta:
        raise ArtefactError(
            f"{p}: not a hapi export (no hapi.design metadata); export it with 'hapi export'"
        )
    outputs = [o.name for o in sess.get_outputs()]
    if outputs[:2] != ["logits", "exit_index"]:
        raise ArtefactError(f"{p}: outputs {outputs}, expected logits and exit_index")

    def run_one(x: np.ndarray) -> tuple[np.ndarray, int]:
        z, idx = sess.run(None, {"input": x})
        return z, int(idx[0])

    return Export(p, str(meta.get("format", "onnx")), meta, run_one)


def _latency_summary(ms: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(ms)),
        "p50": float(np.percentile(ms, 50, method="inverted_cdf")),
        "p90": float(np.percentile(ms, 90, method="inverted_cdf")),
        "p99": float(np.percentile(ms, 99, method="inverted_cdf")),
    }


def measure(
    export: Export, x: np.ndarray, warmup: int = 50, desc: str = "eval"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run every sample once: predicted class, exit index and latency (ms) per sample."""
    n = len(x)
    run = export.runner
    for i in range(min(warmup, n)):
        run(x[i : i + 1])
    pred = np.empty(n, np.int64)
    exit_idx = np.empty(n, np.int64)
    lat = np.empty(n, np.float64)
    clock = time.perf_counter_ns
    with Progress(n, desc) as bar:
        for i in range(n):
            xi = x[i : i + 1]
            t0 = clock()
            z, e = run(xi)
            lat[i] = (clock() - t0) / 1e6
            pred[i] = int(np.argmax(z))
            exit_idx[i] = e
            bar.update()
    return pred, exit_idx, lat


def evaluate_export(cfg: EvalConfig) -> dict[str, Any]:
    """Measure an export on a split and compare it with the cost model's prediction."""
    from hapi_dse.cost.design import Design
    from hapi_dse.deploy.inputs import check_design, load_samples
    from hapi_dse.provenance import provenance
    from hapi_dse.run import RunDir, resolve_run

    if cfg.threads < 1:
        raise UsageError(f"--threads {cfg.threads}: expected >= 1")
    if cfg.limit is not None and cfg.limit < 1:
        raise UsageError(f"--limit {cfg.limit}: expected a positive number of samples")
    export = open_export(cfg.model, cfg.threads)
    meta = export.meta
    model_id = str(meta.get("model_id", ""))
    if cfg.run is not None:
        run = resolve_run(cfg.run)
    elif meta.get("run") and Path(meta["run"]).is_dir():
        run = RunDir(meta["run"])
    else:
        run = resolve_run(None)
    if model_id and run.model_id != model_id:
        raise ArtefactError(
            f"{cfg.model}: exported from model {model_id}, but the run "
            f"{run.path} is {run.model_id}; pass --model with the right run"
        )
    design = Design.from_dict(meta["design"])
    check_design(design, run, cfg.model)
    samples = load_samples(run, cfg.split, dataset=cfg.dataset, data_dir=cfg.data_dir)
    x, y = samples.x, samples.y
    if cfg.limit is not None:
        x, y = x[: cfg.limit], y[: cfg.limit]
    pred, exit_idx, lat = measure(export, x, cfg.warmup)
    m = len(design.exits)
    measured = {
        "accuracy": float(np.mean(pred == y)),
        "latency_ms": _latency_summary(lat),
        "exit_histogram": np.bincount(exit_idx, minlength=m + 1).tolist(),
    }
    predicted, fidelity, table_info = _predict(cfg, run, design, samples.dataset, y, pred, exit_idx)
    rel: dict[str, float | None] = {}
    if predicted is not None:
        rel["accuracy"] = _rel(measured["accuracy"], predicted["accuracy"])
        for k in LATENCY_KEYS:
            p = predicted["latency_ms"].get(k) if predicted["latency_ms"] else None
            rel[f"latency_{k}"] = None if p is None else _rel(measured["latency_ms"][k], p)
    exits = [f"{e.position}:{e.head}" for e in design.exits] + ["final"]
    return {
        "schema_version": SCHEMA_VERSION,
        "model": str(export.path),
        "format": export.fmt,
        "model_id": run.model_id,
        "run": str(run.path),
        "design": design.to_dict(),
        "dataset": samples.dataset,
        "split": cfg.split,
        "n": len(y),
        "exits": exits,
        "measured": measured,
        "predicted": predicted,
        "relative_error": rel,
        "accuracy_diff_pp": None
        if predicted is None
        else 100.0 * (measured["accuracy"] - predicted["accuracy"]),
        "fidelity": fidelity,
        "table": table_info,
        "provenance": provenance(
            seed=cfg.seed,
            inputs={"model": _model_file(export)},
            settings={k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
            libraries=("numpy", "onnxruntime"),
        ),
    }


def _model_file(export: Export) -> Path:
    return export.path / "manifest.json" if export.path.is_dir() else export.path


def _rel(measured: float, predicted: float) -> float | None:
    return None if predicted == 0 else (measured - predicted) / predicted


def _predict(
    cfg: EvalConfig,
    run: Any,
    design: Any,
    dataset: str,
    y: np.ndarray,
    pred: np.ndarray,
    exit_idx: np.ndarray,
) -> tuple[Any, Any, Any]:
    """Cost-model figures for the same samples (``None`` when no statistics cover them)."""
    from hapi_dse.cost.costs import SegmentCosts
    from hapi_dse.cost.model import predict, simulate
    from hapi_dse.run import ExitStats

    if cfg.split not in ("val", "test") or dataset != run.model.get("dataset", dataset):
        return None, None, None
    stats: ExitStats = run.stats(cfg.split)
    n = len(y)
    if stats.n < n or not np.array_equal(stats.labels[:n].astype(np.int64), y):
        log.warning("the exit statistics do not describe these samples: no prediction")
        return None, None, None
    if n < stats.n:
        stats = ExitStats(
            stats.labels[:n],
            stats.confidence[:n],
            stats.entropy[:n],
            stats.prediction[:n],
            stats.position,
            stats.head,
        )
    table_info: dict[str, Any]
    try:
        from hapi_dse.profiling.table import load_table

        table = load_table(cfg.device, run.model_id, cfg.profiles)
        costs = SegmentCosts.from_table(table, stats)
        table_info = {
            "device": cfg.device,
            "path": str(table.path),
            "call_overhead_ms": table.call_overhead_ms,
            "source": table.source,
        }
    except HapiError as e:
        log.warning("no latency prediction: %s", e)
        table_info = {"device": cfg.device, "error": str(e)}
        k = stats.k
        costs = SegmentCosts.from_arrays(
            position=stats.position,
            head=stats.head,
            block_latency_ms=np.zeros(run.num_blocks),
            head_latency_ms=np.zeros(k),
        )
    metrics = predict(design, stats, costs)
    sim_exit, sim_lat = simulate(design, stats, costs)
    m = len(design.exits)
    cols = [stats.column(e.position, e.head) for e in design.exits] + [stats.k - 1]
    sim_pred = stats.prediction[np.arange(n), np.asarray(cols)[sim_exit]]
    predicted = {
        "accuracy": float(metrics["accuracy"]),
        "latency_ms": None
        if "error" in table_info
        else {
            "mean": float(metrics["latency_ms"]),
            "p50": float(np.percentile(sim_lat, 50, method="inverted_cdf")),
            "p90": float(metrics["p90_latency_ms"]),
            "p99": float(metrics["p99_latency_ms"]),
        },
        "exit_histogram": np.bincount(sim_exit, minlength=m + 1).tolist(),
    }
    fidelity = {
        "exit_agreement": float(np.mean(sim_exit == exit_idx)),
        "prediction_agreement": float(np.mean(sim_pred == pred)),
        "disagreeing_samples": int(np.sum(sim_exit != exit_idx)),
    }
    return predicted, fidelity, table_info


def format_report(rep: dict[str, Any]) -> str:
    """The console table of ``hapi eval``."""
    meas, pred, rel = rep["measured"], rep["predicted"], rep["relative_error"]
    lines = [
        f"{rep['model']} ({rep['format']}) on {rep['dataset']} {rep['split']}, {rep['n']} samples"
    ]
    lines.append(f"{'':18}{'measured':>12}{'predicted':>12}{'rel. error':>12}")

    def row(label: str, mv: float, pv: float | None, rv: float | None, fmt: str) -> None:
        ps = "-" if pv is None else format(pv, fmt)
        rs = "-" if rv is None else f"{100 * rv:+.1f} %"
        lines.append(f"{label:18}{format(mv, fmt):>12}{ps:>12}{rs:>12}")

    row(
        "accuracy (%)",
        100 * meas["accuracy"],
        None if pred is None else 100 * pred["accuracy"],
        rel.get("accuracy"),
        ".2f",
    )
    for k in LATENCY_KEYS:
        pv = None if pred is None or pred["latency_ms"] is None else pred["latency_ms"][k]
        row(f"latency {k} (ms)", meas["latency_ms"][k], pv, rel.get(f"latency_{k}"), ".4f")
    lines.append("exit histogram (samples):")
    for i, name in enumerate(rep["exits"]):
        pv = "-" if pred is None else str(pred["exit_histogram"][i])
        lines.append(f"  {i} {name:14}{meas['exit_histogram'][i]:>12}{pv:>12}")
    if rep.get("fidelity"):
        f = rep["fidelity"]
        lines.append(
            f"exit decisions agreeing with the cost model: "
            f"{100 * f['exit_agreement']:.2f} % ({f['disagreeing_samples']} differ)"
        )
    return "\n".join(lines)
