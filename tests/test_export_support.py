"""Shared by the export and eval tests: one single-graph export of the tiny run, made once,
and a made-up profile table for a run.

(No tests here. The export is cached under pytest's base temp directory, so the export and
eval test modules share it whichever runs first.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def write_fake_table(run: Path, profiles: Path, device: str) -> Path:
    """A made-up profile table for the tiny run (latency proportional to FLOPs)."""
    import csv

    from hapi_dse.profiling.table import write_table

    mid = json.loads((run / "model.json").read_text())["model_id"]
    with open(run / "flops.csv", newline="") as f:
        flops = list(csv.DictReader(f))
    rows = []
    for r in flops:
        lat = 0.004 + int(r["flops"]) * 1e-8
        rows.append(
            {
                "segment": r["segment"],
                "position": int(r["position"]),
                "head": r["head"] if r["segment"] != "block" else "",
                "batch": 1,
                "latency_ms": lat,
                "latency_p90_ms": lat * 1.1,
                "energy_mj": 0.0,
                "flops": int(r["flops"]),
                "params": int(r["params"]),
                "runs": 10,
                "source": "measured",
                "energy_source": "modelled",
            }
        )
    return write_table(
        rows, {"call_overhead_ms": 0.004}, device=device, model_id=mid, profiles=profiles
    )


def write_design(
    run: Path,
    path: Path,
    exits: list[tuple[int, str, float]],
    policy: str = "max_softmax",
    patience: int = 0,
) -> Path:
    mid = json.loads((run / "model.json").read_text())["model_id"]
    doc = {
        "schema_version": 1,
        "model_id": mid,
        "device": "host",
        "policy": policy,
        "policy_params": {"patience": patience} if policy == "patience" else {},
        "exits": [{"position": p, "head": h, "threshold": t} for p, h, t in exits],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def shared_export(tiny_run: Path, factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A two-exit max-softmax design of the tiny run, exported once per test session."""
    from hapi_dse.deploy import ExportConfig, export_design

    root = factory.getbasetemp() / "shared-export"
    out = root / "model.onnx"
    design = root / "result" / "host" / "design.json"
    side = out.with_suffix(".export.json")
    if side.is_file():
        info = json.loads(side.read_text())
    else:
        write_design(tiny_run, design, [(1, "linear", 0.6), (4, "conv", 0.8)])
        info = export_design(
            ExportConfig(source=root / "result", out=out, model=str(tiny_run), check_samples=128)
        )
    return {"info": info, "out": out, "design": design, "run": tiny_run}
