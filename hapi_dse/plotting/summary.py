"""The ``.plot.json`` beside each figure: what it shows, as numbers, with its provenance
(the front's points, counts of dominated and infeasible trials, SLO lines, references)."""

from __future__ import annotations

import math
from typing import Any

from hapi_dse.plotting.info import FigureInfo, ResultSet
from hapi_dse.provenance import provenance


def figure_summary(
    info: FigureInfo, results: list[ResultSet], *, seed: int, settings: dict[str, Any]
) -> dict[str, Any]:
    """The summary of one figure drawn from ``results`` (those of ``info.device`` count);
    a figure missing from a trial (NaN in ``trials.csv``) is ``null``: the file is standard
    JSON."""
    return _null_nan(_summary(info, results, seed=seed, settings=settings))


def _null_nan(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _null_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_null_nan(v) for v in obj]
    return obj


def _summary(
    info: FigureInfo, results: list[ResultSet], *, seed: int, settings: dict[str, Any]
) -> dict[str, Any]:
    return {
        "device": info.device,
        "x": info.x,
        "y": info.y,
        "series": [
            {
                "label": s.label,
                "front": s.front.to_dict("records"),
                "dominated": len(s.dominated),
                "infeasible": len(s.infeasible),
            }
            for s in info.series
        ],
        "slo_lines": [vars(v) for v in info.slo_lines],
        "references": [vars(r) for r in info.references],
        "provenance": provenance(
            seed=seed,
            inputs={
                f"trials{i}": r.path / "trials.csv"
                for i, r in enumerate(results)
                if r.device == info.device
            },
            settings=settings,
        ),
    }
