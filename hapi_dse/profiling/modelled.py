"""Modelled profiles: every segment's latency from a device spec, operator by operator.

Each ONNX node costs its class's overhead plus ``max(flops / rate, bytes / bandwidth)``
plus its class's time per output element, on one core (:mod:`hapi_dse.profiling.opcost`
gives its class and work, the spec its class's figures). With the spec's ``threads`` above
one, the compute splits over the cores with the class's parallel efficiency, the bandwidth
is shared, and forking costs ``thread_overhead_us``; a node runs on one core when that is
quicker, as onnxruntime's cost model decides. A fused node (an activation folded into its
Conv) pays no overhead. A graph adds one ``call_overhead`` (a table latency includes one
``session.run``). Energy is ``active_power_w * latency``. The estimate grows with FLOPs for
equal shapes.

Counts come from the exported graph (``onnx`` shape inference), i.e. what the runtime
executes: BatchNorm is already folded into Conv by the exporter.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hapi_dse.profiling.base import Profiler, ProfileResult, ProgressFn, make_row
from hapi_dse.profiling.manifest import Manifest
from hapi_dse.profiling.opcost import GraphCosts, NodeCost, graph_costs
from hapi_dse.profiling.specs import DeviceSpec

__all__ = ["GraphCosts", "ModelledProfiler", "NodeCost", "estimate_s", "graph_costs"]


def node_seconds(c: NodeCost, spec: DeviceSpec, threads: int) -> tuple[float, float]:
    """(overhead, work) seconds of one node on ``threads`` cores."""
    overhead = 0.0 if c.fused else spec.overhead_s(c.cls, threads)
    if not (c.flops or c.bytes or c.outputs):
        return overhead, 0.0
    rate = spec.rate(c.cls)
    per_output = c.outputs * spec.output_s(c.cls)
    one = max(c.flops / rate, c.bytes / spec.bandwidth(1, c.cls)) + per_output
    if threads <= 1:
        return overhead, one
    speedup = 1.0 + (threads - 1) * spec.parallel(c.cls)
    split = max(c.flops / (rate * speedup), c.bytes / spec.bandwidth(threads, c.cls))
    split += per_output / speedup + spec.fork_join_s
    return overhead, min(one, split)


def estimate_s(costs: Iterable[NodeCost], spec: DeviceSpec, threads: int | None = None) -> float:
    """Seconds for one ``session.run`` of a graph with these nodes on ``spec`` at ``threads``
    (default: the spec's)."""
    n = threads or spec.threads
    t = spec.call_overhead_us * 1e-6
    for c in costs:
        t += sum(node_seconds(c, spec, n))
    return t


def class_breakdown(
    costs: Iterable[NodeCost], spec: DeviceSpec, threads: int | None = None
) -> dict[str, float]:
    """Seconds per operator class (and ``call`` for the ``session.run`` overhead); they sum
    to :func:`estimate_s`."""
    n = threads or spec.threads
    out: dict[str, float] = {"call": spec.call_overhead_us * 1e-6}
    for c in costs:
        out[c.cls] = out.get(c.cls, 0.0) + sum(node_seconds(c, spec, n))
    return out


def estimate_file_s(path: str | Path, spec: DeviceSpec, threads: int | None = None) -> float:
    return estimate_s(graph_costs(path, spec.channel_block), spec, threads)


#: operators of one exit decision as hapi exports it (hapi_dse.graphs.graph.fires), its
#: If node included; the decision's arithmetic on a few logits is negligible beside them
DECISION_OPS = {"max_softmax": 9, "entropy": 12, "patience": 7}
#: operators a graph with exits runs once per call: OptionalHasElement and If for each of
#: its optional inputs (thresholds, temperatures)
GRAPH_ENTRY_OPS = 4


def modelled_terms(spec: DeviceSpec) -> dict[str, Any]:
    """The deployment terms (:mod:`hapi_dse.cost.deployment`) from a device spec.

    A decision costs the overheads of its operators (:data:`DECISION_OPS`); entering a graph
    with exits those of its optional inputs (:data:`GRAPH_ENTRY_OPS`); entering a stage
    the overheads of its layout-anchor Conv and of the branch; a block read cold streams its
    weights at the memory bandwidth. The roofline already models blocks inside one graph
    (no offset), and nothing models nesting or eviction (zero): labelled ``modelled``.
    """
    from hapi_dse.cost.deployment import DeploymentTerms

    op_ms = spec.op_overhead_us * 1e-3
    terms = DeploymentTerms(
        decision_ms={p: n * op_ms for p, n in DECISION_OPS.items()},
        stage_entry_ms=spec.overhead_s("conv") * 1e3 + op_ms,
        graph_entry_ms=GRAPH_ENTRY_OPS * op_ms,
        cold_ms_per_mb=1e6 / spec.mem_bandwidth_bytes_per_s * 1e3,
        source="modelled",
    )
    return {
        **terms.to_dict(),
        "model": "decision: its operators' overheads; graph entry: the optional inputs' "
        "operators' overheads; stage entry: anchor Conv + branch "
        "overheads; cold weights: MB / memory bandwidth (hapi_dse.profiling.modelled)",
    }


class ModelledProfiler(Profiler):
    """Latency and energy of every segment from a :class:`DeviceSpec` (no timing)."""

    source = "modelled"

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec

    def profile(self, manifest: Manifest, progress: ProgressFn | None = None) -> ProfileResult:
        segs = manifest.table_segments()
        rows = []
        for i, seg in enumerate(segs):
            lat_ms = estimate_file_s(manifest.path(seg), self.spec) * 1e3
            rows.append(
                make_row(
                    seg,
                    batch=manifest.batch,
                    latency_ms=lat_ms,
                    latency_p90_ms=lat_ms,
                    energy_mj=self.spec.active_power_w * lat_ms,
                    runs=0,
                    source="modelled",
                    energy_source="modelled",
                )
            )
            if progress:
                progress(i + 1, len(segs))
        side: dict[str, Any] = {
            "deployment": modelled_terms(self.spec),
            "profiler": "op-class",
            "provider": "modelled",
            "threads": self.spec.threads,
            "call_overhead_ms": self.spec.call_overhead_us * 1e-3,
            "spec": self.spec.to_dict(),
            "energy_source": "modelled",
            "energy": {
                "model": "active_power_w * latency_ms",
                "active_power_w": self.spec.active_power_w,
            },
        }
        return ProfileResult(rows, side)
