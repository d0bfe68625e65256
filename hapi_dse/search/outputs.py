"""What a search leaves behind (DESIGN 2.3): ``trials.csv``, ``pareto.csv``, ``design.json``
and ``search.json`` in ``<out>/<device>/``, written together from a
:class:`~hapi_dse.search.records.DeviceResult` (the writers only format it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hapi_dse.atomic import write_json, write_text
from hapi_dse.cost import METRICS
from hapi_dse.csvio import csv_text
from hapi_dse.outdirs import atomic_dir
from hapi_dse.provenance import SCHEMA_VERSION, provenance
from hapi_dse.search.picking import shortfall
from hapi_dse.search.records import DeviceResult, TrialRecord, broken_slos, speedup
from hapi_dse.search.relax import relax_slos
from hapi_dse.search.verify import MEASURED_COLUMNS


def _design_columns(r: TrialRecord) -> dict[str, Any]:
    d = r.design
    return {
        "policy": d.policy if d else "",
        "patience": d.policy_params.get("patience", "") if d else "",
        "n_exits": len(d.exits) if d else "",
        "exits": d.compact() if d else "",
    }


def trials_table(result: DeviceResult) -> tuple[list[str], list[dict[str, Any]]]:
    cons = [f"constraint_{s.name}" for s in result.slos]
    header = [
        "trial",
        "state",
        "policy",
        "patience",
        "n_exits",
        "exits",
        *METRICS,
        *cons,
        "feasible",
        "pareto",
    ]
    rows = []
    for r in result.records:
        row: dict[str, Any] = {"trial": r.number, "state": r.state, **_design_columns(r)}
        for m in METRICS:
            row[m] = r.metrics[m] if r.metrics else ""
        for s, c in zip(result.slos, cons, strict=True):
            row[c] = r.violations.get(s.name, "")
        row["feasible"] = r.feasible
        row["pareto"] = r.pareto
        rows.append(row)
    return header, rows


def pareto_table(result: DeviceResult) -> tuple[list[str], list[dict[str, Any]]]:
    header = [
        "trial",
        "policy",
        "patience",
        "n_exits",
        "exits",
        *METRICS,
        *[f"test_{m}" for m in METRICS],
        "test_breaks_slo",
        "test_broken_slos",
        *[f"measured_{m}" for m in MEASURED_COLUMNS],
        "measured_broken_slos",
        "chosen",
        "val_below_backbone_pp",
        "test_below_backbone_pp",
        "test_below_backbone",
    ]
    rows = []
    for r in result.front:
        assert r.metrics is not None and r.test is not None
        row: dict[str, Any] = {"trial": r.number, **_design_columns(r)}
        row.update({m: r.metrics[m] for m in METRICS})
        row.update({f"test_{m}": r.test[m] for m in METRICS})
        row["test_breaks_slo"] = bool(r.test_broken)
        row["test_broken_slos"] = ";".join(r.test_broken)
        for m in MEASURED_COLUMNS:
            row[f"measured_{m}"] = r.measured[m] if r.measured else ""
        row["measured_broken_slos"] = ";".join(r.measured_broken)
        row["chosen"] = r is result.chosen
        short = shortfall(r.metrics, r.test, result.backbone)
        row["val_below_backbone_pp"] = "" if short is None else short.val_pp
        row["test_below_backbone_pp"] = "" if short is None else short.test_pp
        row["test_below_backbone"] = short is not None and short.flagged
        rows.append(row)
    return header, rows


def design_json(result: DeviceResult, prov: dict[str, Any]) -> dict[str, Any]:
    r = result.chosen
    assert r is not None and r.design is not None and r.metrics is not None
    short = shortfall(r.metrics, r.test, result.backbone)
    return {
        "schema_version": SCHEMA_VERSION,
        "model_id": result.model_id,
        "device": result.device,
        **r.design.to_dict(),
        "predicted_val": r.metrics,
        "predicted_test": r.test,
        "test_broken_slos": r.test_broken,
        # accuracy below the plain backbone's (backbone_predicted), in pp, on each split; the
        # flag: test loses clearly more than val promised (picking.Shortfall.flagged)
        "val_below_backbone_pp": None if short is None else short.val_pp,
        "test_below_backbone_pp": None if short is None else short.test_pp,
        "test_below_backbone": short is not None and short.flagged,
        "measured_val": r.measured,
        "slos": [s.to_dict() for s in result.slos],
        "objectives": [o.metric for o in result.objectives],
        "pick": result.pick_rule,
        "trial": r.number,
        "backbone_predicted": result.backbone or None,
        "predicted_speedup_over_backbone": speedup(result, r),
        "provenance": prov,
    }


def search_json(result: DeviceResult, cfg: Any, prov: dict[str, Any]) -> dict[str, Any]:
    complete = result.complete
    search_s = result.timings.get("search_s", 0.0)
    return {
        "schema_version": SCHEMA_VERSION,
        "model_id": result.model_id,
        "device": result.device,
        "table_source": result.table_source,
        # which table on the search path was used: ./profiles shadows the installed copy
        "table_path": str(result.inputs["table"]) if "table" in result.inputs else None,
        "space": {"name": result.space_name, "designs": result.space_size},
        "sampler": {"name": result.sampler, "population": result.population, "seed": cfg.seed},
        "storage": result.storage,
        "study": result.study_name,
        "objectives": [{"metric": o.metric, "direction": o.direction} for o in result.objectives],
        "slos": [s.to_dict() for s in result.slos],
        "pick": result.pick_rule,
        "trials": {
            "requested": cfg.trials,
            "total": len(result.records),
            "complete": len(complete),
            "this_run": result.new_trials,
            "feasible": sum(r.feasible for r in complete),
            "pareto": len(result.front),
            "distinct_designs": len({r.design.key for r in complete if r.design}),
        },
        "feasible": result.feasible,
        "chosen_trial": result.chosen.number if result.chosen else None,
        "verify": result.verify,
        "closest": [
            {
                "trial": r.number,
                "exits": r.design.compact() if r.design else "",
                "broken": broken_slos(r, result.slos),
            }
            for r in result.closest
        ],
        # no feasible design: the --slo the closest trial meets (hapi export repeats it)
        "relax": relax_slos(result),
        "timings": {
            **result.timings,
            "trials_per_s": result.new_trials / search_s if search_s > 0 else None,
        },
        "provenance": prov,
    }


def write_results(
    result: DeviceResult, out_dir: Path, cfg: Any, *, overwrite: bool | None = None
) -> None:
    """Write the four files into ``out_dir`` at once (the directory is swapped in whole);
    a previous result there is replaced when ``overwrite`` (default ``cfg.overwrite``)."""
    prov = provenance(
        seed=cfg.seed, inputs=result.inputs, settings=cfg.settings(), libraries=("numpy", "optuna")
    )
    replace = cfg.overwrite if overwrite is None else overwrite
    with atomic_dir(out_dir, kind="search", overwrite=replace) as tmp:
        header, rows = trials_table(result)
        write_text(tmp / "trials.csv", csv_text(rows, header))
        header, rows = pareto_table(result)
        write_text(tmp / "pareto.csv", csv_text(rows, header))
        if result.chosen is not None:
            write_json(tmp / "design.json", design_json(result, prov))
        write_json(tmp / "search.json", search_json(result, cfg, prov))
        if result.verify_dir is not None:
            shutil.move(str(result.verify_dir), str(tmp / "verify"))
    result.out_dir = out_dir


__all__ = ["design_json", "pareto_table", "search_json", "trials_table", "write_results"]
