"""``hapi eval``: run an export with onnxruntime and set the measurement beside the prediction.

Measured (:mod:`hapi_dse.deploy.measure`: interleaved rounds, each exit path's latency the
median of its quietest round, as the profile times a segment): accuracy, exit histogram,
latency per exit path and, over the samples, latency mean, p50, p90, p99 and max. Predicted:
the same figures from the cost model on the run's exit statistics of the same split and this
machine's profile table (``--device``, default ``host``: ``hapi profile --device host --model
RUN``), deployment terms included. Also: the share of samples whose exit and class agree
with the cost model's simulation (the fidelity of the exported decisions), and a verdict for
every SLO the design was searched under (measured and predicted value; met, broken, or not
measurable here). The statistics over samples are the cost model's
(:func:`hapi_dse.cost.metrics.statistics`).

The export is opened by :mod:`hapi_dse.deploy.load`; the console table is
:func:`hapi_dse.deploy.report.format_report`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.cost.metrics import STATISTIC_METRICS, STATISTICS, find_metric, statistic
from hapi_dse.deploy.load import MANIFEST, Export, open_export
from hapi_dse.deploy.measure import measure_exports
from hapi_dse.errors import HapiError, SettingError, UsageError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2


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
    passes: int = 2
    seed: int = 0
    overwrite: bool = False  # replace a report file hapi did not write


def evaluate_export(cfg: EvalConfig, *, progress: bool = True) -> dict[str, Any]:
    """Measure an export on a split and compare it with the cost model's prediction;
    ``progress``: a progress bar on a terminal."""
    return evaluate_exports([cfg.model], cfg, progress=progress)[0]


def report_path(model: Path) -> Path:
    """Where ``hapi eval`` writes the report of ``model`` unless told: ``MODEL.eval.json``,
    or ``DIR/eval.json`` for a staged export directory."""
    return model / "eval.json" if model.is_dir() else model.with_suffix(".eval.json")


def evaluate_to_file(
    cfg: EvalConfig, out: Path | None = None, *, progress: bool = True
) -> tuple[dict[str, Any], Path]:
    """:func:`evaluate_export`, its report written to ``out`` (default
    :func:`report_path`), which is checked writable before the measurement, not after it.
    Returns the report and where it went."""
    from hapi_dse.atomic import write_json
    from hapi_dse.deploy.export import sidecar_for
    from hapi_dse.outdirs import check_out_file
    from hapi_dse.ownership import adopt

    out = report_path(cfg.model) if out is None else out
    if cfg.model.is_dir():  # a staged export: its files, but the report it may hold
        inputs = [p for p in cfg.model.iterdir() if p.name != report_path(cfg.model).name]
    else:
        inputs = [cfg.model, sidecar_for(cfg.model, "onnx")]
    check_out_file(out, inputs=[*inputs, cfg.run], overwrite=cfg.overwrite)
    rep = evaluate_export(cfg, progress=progress)
    write_json(out, rep)
    adopt(out)  # a report inside a staged export stays part of it
    return rep, out


def evaluate_exports(
    models: list[Path], cfg: EvalConfig, *, progress: bool = True
) -> list[dict[str, Any]]:
    """:func:`evaluate_export` for several exports of one run, measured together: their
    timing rounds interleave (:func:`~hapi_dse.deploy.measure.measure_exports`), so that a
    drift of the machine hits them all alike. ``cfg.model`` is ignored."""
    from hapi_dse.cost.design import Design
    from hapi_dse.deploy.inputs import check_design, load_samples
    from hapi_dse.provenance import provenance
    from hapi_dse.run import RunDir, resolve_run
    from hapi_dse.training_id import check_same_training

    if cfg.threads < 1:
        raise SettingError("threads", f"{cfg.threads}: expected >= 1")
    if cfg.limit is not None and cfg.limit < 1:
        raise SettingError("limit", f"{cfg.limit}: expected a positive number of samples")
    if cfg.passes < 1:
        raise SettingError("passes", f"{cfg.passes}: expected >= 1")
    exports = [open_export(m, cfg.threads) for m in models]
    runs: list[Any] = []
    designs: list[Any] = []
    for path, export in zip(models, exports, strict=True):
        meta = export.meta
        model_id = str(meta.get("model_id", ""))
        if cfg.run is not None:
            run = resolve_run(cfg.run)
        elif meta.get("run") and Path(meta["run"]).is_dir():
            run = RunDir(meta["run"])
        else:
            run = resolve_run(None)
        if model_id:  # an export that names no model has nothing to check
            check_same_training(
                f"{path}: export",
                model_id,
                run,
                fix=f"pass --model with the run directory of {model_id}",
            )
        if runs and run.path.resolve() != runs[0].path.resolve():
            raise UsageError(f"{path}: exported from another run than {models[0]}")
        design = Design.from_dict(meta["design"])
        check_design(design, run, path)
        runs.append(run)
        designs.append(design)
    run = runs[0]
    samples = load_samples(
        run, cfg.split, dataset=cfg.dataset, data_dir=cfg.data_dir, first=cfg.limit
    )
    x, y = samples.x, samples.y
    if cfg.limit is not None:
        x, y = x[: cfg.limit], y[: cfg.limit]
    measurements = measure_exports(
        [e.runner for e in exports],
        x,
        num_paths=[len(d.exits) + 1 for d in designs],
        passes=cfg.passes,
        warmup=cfg.warmup,
        seed=cfg.seed,
        threads=cfg.threads,
        desc="eval",
        progress=progress,
    )
    reports = []
    for export, design, meas in zip(exports, designs, measurements, strict=True):
        pred, exit_idx = meas.prediction, meas.exit_index
        m = len(design.exits)
        measured = {
            "accuracy": float(np.mean(pred == y)),
            "latency_ms": meas.latency_ms,
            "path_latency_ms": meas.path_ms,
            "raw_mean_latency_ms": meas.raw_mean_ms,
            "exit_histogram": np.bincount(exit_idx, minlength=m + 1).tolist(),
            "load": meas.load,
            "protocol": "hapi_dse.deploy.measure: per exit path, min over interleaved rounds "
            "of the round median",
        }
        predicted, fidelity, table_info = _predict(
            cfg, run, design, samples.dataset, y, pred, exit_idx
        )
        rel: dict[str, float | None] = {}
        if predicted is not None:
            rel["accuracy"] = _rel(measured["accuracy"], predicted["accuracy"])
            for k in STATISTICS:
                p = predicted["latency_ms"].get(k) if predicted["latency_ms"] else None
                rel[f"latency_{k}"] = None if p is None else _rel(measured["latency_ms"][k], p)
        exits = [f"{e.position}:{e.head}" for e in design.exits] + ["final"]
        reports.append(
            {
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
                # the readings behind it are measured["load"] (hapi_dse.deploy.measure)
                "machine_busy": meas.busy,
                "measured": measured,
                "predicted": predicted,
                "relative_error": rel,
                "accuracy_diff_pp": None
                if predicted is None
                else 100.0 * (measured["accuracy"] - predicted["accuracy"]),
                "fidelity": fidelity,
                "slos": slo_verdicts(export.meta.get("slos") or [], measured, predicted),
                "table": table_info,
                "provenance": provenance(
                    seed=cfg.seed,
                    inputs={"model": _model_file(export)},
                    settings={
                        k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()
                    }
                    | {"model": str(export.path)},
                    libraries=("numpy", "onnxruntime"),
                ),
            }
        )
    return reports


def slo_verdicts(
    slos: list[dict[str, Any]], measured: dict[str, Any], predicted: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Per SLO (``design.json`` form): the measured and predicted values and a verdict,
    ``met``, ``broken``, or ``not measured`` (energy and size have no meter here)."""
    from hapi_dse.cost.slo import SLO

    out = []
    for i, d in enumerate(slos):
        slo = SLO.from_dict(d, name=f"slos[{i}]")
        found = find_metric(slo.metric)
        if slo.metric == "accuracy":
            mv: float | None = measured["accuracy"]
        elif found is not None and found.statistic is not None:
            mv = measured["latency_ms"][found.statistic]
        else:
            mv = None
        pv = None
        if predicted is not None and predicted.get("metrics"):
            pv = predicted["metrics"].get(slo.metric)
        verdict = (
            "not measured"
            if mv is None
            else ("broken" if slo.violation({slo.metric: mv}) > 0 else "met")
        )
        out.append(
            {
                "slo": slo.text or slo.describe(),
                "metric": slo.metric,
                "bound": "max" if slo.upper else "min",
                "value": slo.value,
                "measured": mv,
                "predicted": pv,
                "verdict": verdict,
            }
        )
    return out


def broken_slos(rep: dict[str, Any]) -> list[str]:
    """The SLOs an evaluation report found broken, as measured."""
    return [v["slo"] for v in rep.get("slos", []) if v["verdict"] == "broken"]


def _model_file(export: Export) -> Path:
    return export.path / MANIFEST if export.path.is_dir() else export.path


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
        if table.source != "measured" or cfg.device != "host":
            how = "modelled" if table.source != "measured" else "measured"
            table_info["note"] = (
                f"the prediction is from the {how} table of {cfg.device!r} ({table.path}), "
                "not a measurement of this machine unless it was profiled here: the relative "
                "errors compare two machines ('hapi profile --device host' times this one)"
            )
    except HapiError as e:
        log.warning("no latency prediction: %s", e)
        table_info = {"device": cfg.device, "error": str(e)}
        costs = SegmentCosts.zero(stats, run.num_blocks)
    from hapi_dse.cost.model import CostModel

    model = CostModel(stats, costs)
    metrics = model.evaluate(design)
    sim_exit, sim_lat = model.simulate(design)
    path_ms, _ = model.exit_costs(design, np.bincount(sim_exit, minlength=len(design.exits) + 1))
    m = len(design.exits)
    cols = [stats.column(e.position, e.head) for e in design.exits] + [stats.k - 1]
    sim_pred = stats.prediction[np.arange(n), np.asarray(cols)[sim_exit]]
    # the cost model's figure where it predicts the statistic, else (p50) the statistic over
    # the latencies of its simulated samples
    column = {m.statistic: m.column for m in STATISTIC_METRICS}
    predicted = {
        "accuracy": float(metrics["accuracy"]),
        "latency_ms": None
        if "error" in table_info
        else {
            k: float(metrics[column[k]]) if k in column else statistic(sim_lat, k)
            for k in STATISTICS
        },
        # without a table only accuracy is predicted: the costs above are placeholders
        "metrics": {
            k: float(v) for k, v in metrics.items() if "error" not in table_info or k == "accuracy"
        },
        "path_latency_ms": None if "error" in table_info else path_ms.tolist(),
        "exit_histogram": np.bincount(sim_exit, minlength=m + 1).tolist(),
    }
    fidelity = {
        "exit_agreement": float(np.mean(sim_exit == exit_idx)),
        "prediction_agreement": float(np.mean(sim_pred == pred)),
        "disagreeing_samples": int(np.sum(sim_exit != exit_idx)),
    }
    return predicted, fidelity, table_info
