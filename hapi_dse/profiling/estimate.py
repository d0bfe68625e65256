"""``hapi estimate``: the modelled latency and energy of any ONNX graph on a device.

Needs onnx and numpy only (the base install): the graph's operators are costed from their
shapes (:mod:`hapi_dse.profiling.opcost`) on the device's spec
(:mod:`hapi_dse.profiling.modelled`). Every figure is modelled, and labelled so with the
spec it came from and whether that spec was calibrated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hapi_dse.profiling.modelled import class_breakdown
from hapi_dse.profiling.opcost import graph_costs
from hapi_dse.profiling.specs import DeviceSpec


@dataclass(frozen=True)
class Estimate:
    """One graph on one device: ``latency_ms`` (mean, one ``session.run``), ``energy_mj``
    (active power x latency), ``flops``, ``share`` of the latency per operator class (and
    ``call``), and the operators that had no cost formula."""

    file: str
    latency_ms: float
    energy_mj: float
    flops: int
    share: dict[str, float] = field(default_factory=dict)
    unknown_ops: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "latency_ms": self.latency_ms,
            "energy_mj": self.energy_mj,
            "flops": self.flops,
            "share": self.share,
            "unknown_ops": self.unknown_ops,
        }


def estimate_files(
    paths: list[str | Path], spec: DeviceSpec, threads: int | None = None
) -> list[Estimate]:
    """Model every graph of ``paths`` on ``spec`` at ``threads`` (default: the spec's)."""
    out = []
    for p in paths:
        costs = graph_costs(p, spec.channel_block)
        parts = class_breakdown(costs, spec, threads)
        sec = sum(parts.values())
        out.append(
            Estimate(
                file=str(p),
                latency_ms=sec * 1e3,
                energy_mj=spec.active_power_w * sec * 1e3,
                flops=costs.flops,
                share={k: v / sec for k, v in sorted(parts.items(), key=lambda kv: -kv[1])},
                unknown_ops=sorted(set(costs.unknown_ops)),
            )
        )
    return out


def spec_label(spec: DeviceSpec, threads: int) -> str:
    if not spec.calibrated:
        how = "from its datasheet spec, not calibrated"
    else:
        mape = spec.calibration.get("fit_mape")
        err = f"{mape * 100:.1f} %" if isinstance(mape, (int, float)) else "unrecorded"
        how = f"calibrated, fit error {err} on {spec.calibration.get('graphs', '?')} graphs"
    return f"modelled for {spec.name} at {threads} thread(s) ({how}; spec {spec.path})"


def format_estimates(
    rows: list[Estimate], spec: DeviceSpec, threads: int, *, breakdown: bool = False
) -> str:
    width = max([len("FILE"), *(len(r.file) for r in rows)])
    lines = [
        f"{'FILE'.ljust(width)}  {'LATENCY_MS':>10}  {'ENERGY_MJ':>9}  {'MFLOPS':>9}",
        *(
            f"{r.file.ljust(width)}  {r.latency_ms:10.4f}  {r.energy_mj:9.4f}  "
            f"{r.flops / 1e6:9.2f}"
            + (
                "\n  " + ", ".join(f"{k} {v * 100:.1f} %" for k, v in r.share.items())
                if breakdown
                else ""
            )
            for r in rows
        ),
        spec_label(spec, threads),
    ]
    return "\n".join(lines)


def estimates_json(rows: list[Estimate], spec: DeviceSpec, threads: int, seed: int = 0) -> str:
    """The ``--json`` document: every row, the spec, and the provenance (inputs hashed)."""
    from hapi_dse.provenance import provenance

    inputs: dict[str, str | Path] = {f"graph{i}": r.file for i, r in enumerate(rows)}
    if spec.path:
        inputs["spec"] = spec.path
    return json.dumps(
        {
            "device": spec.name,
            "threads": threads,
            "source": "modelled",
            "spec": str(spec.path) if spec.path else None,
            "calibrated": spec.calibrated,
            "calibration": spec.calibration or None,
            "graphs": [r.to_dict() for r in rows],
            "provenance": provenance(
                seed=seed, inputs=inputs, settings={"threads": threads}, libraries=("onnx",)
            ),
        },
        indent=2,
        allow_nan=False,
    )
