"""``hapi search --verify K``: hardware in the loop before the pick.

When the device's table was measured on this machine, the K feasible Pareto designs nearest
the pick (objectives scaled to 0..1, the pick first) are exported as ``hapi export`` would
and measured together as ``hapi eval`` does (:mod:`hapi_dse.deploy.measure`), on the
validation split that the search scored them on. Their measured figures go beside the
predicted ones (``pareto.csv`` ``measured_*`` columns, ``design.json`` ``measured_val``),
and the pick is made again among the verified designs that meet every SLO *as measured*
(latency SLOs and accuracy are measured; energy and size keep their predicted values). When
none does, up to two more rounds verify the best K designs that would still meet every SLO
with their predicted latencies scaled by the worst measured/predicted ratio seen so far.
When none of those does either, the search has no feasible design (exit status 1) and says
so.

A board without hapi's training stack can do the same later: export candidates with
``hapi export RESULT --trial N`` here and run ``hapi eval --check-slo`` there.

Imports torch (through the export) only when called.
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.cost.metrics import STATISTIC_METRICS
from hapi_dse.errors import SettingError
from hapi_dse.run import REGISTERED_ONLY, CodeTrust
from hapi_dse.tempdirs import make_temp_dir

log = logging.getLogger(__name__)

MEASURED_COLUMNS = ("accuracy", *(m.column for m in STATISTIC_METRICS))


def this_machine() -> dict[str, str]:
    """How a measured table's sidecar names the machine it was measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "machine": platform.machine(),
    }


def check_verifiable(device: str, sidecar: dict[str, Any], path: Any) -> None:
    """``--verify`` times designs here: the table must be this machine's, measured."""
    if sidecar.get("source") != "measured" or sidecar.get("machine") != this_machine():
        how = "modelled" if sidecar.get("source") == "modelled" else "measured elsewhere"
        raise SettingError(
            "verify",
            f"measures designs on this machine, but the {device} table {path} is "
            f"{how}; profile this machine ('hapi profile --device {device}') or, on the "
            "device, run 'hapi eval --check-slo' on exports from 'hapi export --trial N'",
        )


def nearest(front: list[Any], chosen: Any, objectives: list[Any], k: int) -> list[Any]:
    """The ``k`` front members nearest ``chosen`` in objective space (scaled to 0..1)."""
    pts = np.array([r.objective_vector(objectives) for r in front])
    span = np.ptp(pts, axis=0)
    span[span == 0] = 1.0
    here = np.array(chosen.objective_vector(objectives))
    dist = np.linalg.norm((pts - here) / span, axis=1)
    order = sorted(range(len(front)), key=lambda i: (dist[i], front[i].number))
    return [front[i] for i in order[:k]]


def measured_metrics(rep: dict[str, Any]) -> dict[str, float]:
    out = {"accuracy": float(rep["measured"]["accuracy"])}
    for m in STATISTIC_METRICS:  # each latency metric as measured, by its own statistic
        out[m.column] = float(rep["measured"]["latency_ms"][m.statistic])
    return out


#: rounds of verification: the designs nearest the pick, then (while no verified design
#: meets every SLO as measured) the best designs that still would after scaling their
#: predictions by the worst measured/predicted ratio seen so far
MAX_ROUNDS = 3


def _export_and_measure(
    batch: list[Any],
    result: Any,
    run: Any,
    cfg: Any,
    tmp: Path,
    *,
    progress: bool,
    code: CodeTrust,
) -> list[dict[str, Any]]:
    from hapi_dse.atomic import write_json
    from hapi_dse.deploy.evaluate import EvalConfig, evaluate_exports
    from hapi_dse.deploy.export import ExportConfig, export_design

    exports = []
    for r in batch:
        doc = {
            "model_id": result.model_id,
            "device": result.device,
            **r.design.to_dict(),
            "slos": [s.to_dict() for s in result.slos],
            "trial": r.number,
        }
        src = tmp / f"trial_{r.number}.design.json"
        write_json(src, doc)
        out = tmp / f"trial_{r.number}.onnx"
        export_design(
            ExportConfig(source=src, out=out, model=str(run.path), seed=cfg.seed), code=code
        )
        exports.append(out)
    reports = evaluate_exports(
        exports,
        EvalConfig(
            model=exports[0],
            run=str(run.path),
            split="val",
            device=result.device,
            profiles=cfg.profiles,
            seed=cfg.seed,
        ),
        progress=progress,
    )
    for r, out, rep in zip(batch, exports, reports, strict=True):
        write_json(out.with_suffix(".eval.json"), rep)
        r.measured = measured_metrics(rep)
        merged = {**r.metrics, **r.measured}
        r.measured_broken = [s.label() for s in result.slos if s.violation(merged) > 0]
    return reports


def _next_batch(result: Any, verified: list[Any], k: int) -> tuple[list[Any], dict[str, float]]:
    """The best ``k`` unverified front designs (by the pick rule) that meet every SLO with
    their latency predictions scaled by the worst measured/predicted ratio of ``verified``."""
    from hapi_dse.search.picking import pick

    ratio = {
        col: max(r.measured[col] / r.metrics[col] for r in verified if r.metrics[col] > 0)
        for col in (m.column for m in STATISTIC_METRICS)
    }
    seen = {r.number for r in verified}

    def holds(r: Any) -> bool:
        scaled = {**r.metrics, **{m: r.metrics[m] * ratio[m] for m in ratio}}
        return all(s.violation(scaled) <= 0 for s in result.slos)

    pool = [r for r in result.front if r.number not in seen and holds(r)]
    batch: list[Any] = []
    while pool and len(batch) < k:
        best = pick(pool, result.objectives, result.pick_rule, result.backbone.get("val"))
        batch.append(best)
        pool.remove(best)
    return batch, ratio


def verify(
    result: Any,
    run: Any,
    cfg: Any,
    work_root: Path,
    *,
    progress: bool = True,
    code: CodeTrust = REGISTERED_ONLY,
) -> None:
    """Export, measure and re-pick (see the module docstring); fills ``result.verify`` and
    ``result.verify_dir`` (the exports and reports, moved into the result directory).
    ``progress``: progress bars on a terminal; ``code``: what code the run's model.json may
    run (:class:`~hapi_dse.run.CodeTrust`)."""
    from hapi_dse.search.picking import pick

    k = int(cfg.verify)
    info: dict[str, Any] = {"requested": k, "split": "val"}
    result.verify = info
    if result.chosen is None:
        info["note"] = "no feasible design to verify"
        return
    t0 = time.perf_counter()
    batch = nearest(result.front, result.chosen, result.objectives, k)
    work_root.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(".hapi-verify-", work_root)  # a killed search's is swept
    verified: list[Any] = []
    rounds: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    try:
        for _ in range(MAX_ROUNDS):
            reports += _export_and_measure(
                batch, result, run, cfg, tmp, progress=progress, code=code
            )
            verified += batch
            rounds.append({"trials": [r.number for r in batch]})
            if any(not r.measured_broken for r in verified):
                break
            batch, ratio = _next_batch(result, verified, k)
            rounds[-1]["measured_over_predicted_max"] = ratio
            if not batch:
                break
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ok = [r for r in verified if not r.measured_broken]
    before = result.chosen
    result.chosen = pick(ok, result.objectives, result.pick_rule, result.backbone.get("val"))
    result.verify_dir = tmp
    info.update(
        {
            "verified_trials": [r.number for r in verified],
            "rounds": rounds,
            "meeting_slos_as_measured": [r.number for r in ok],
            "predicted_pick": before.number,
            "chosen_trial": result.chosen.number if result.chosen else None,
            "repicked": result.chosen is not before,
            "load": reports[0]["measured"]["load"],
            "protocol": reports[0]["measured"]["protocol"],
            "wall_s": round(time.perf_counter() - t0, 1),
            "files": "verify/trial_N.onnx and trial_N.eval.json",
        }
    )
    if result.chosen is None:
        result.closest = sorted(verified, key=lambda r: (len(r.measured_broken), r.number))
        info["note"] = "no verified design meets every SLO as measured"
