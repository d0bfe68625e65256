"""Modelled profiles: a roofline-style estimate per segment from a device spec.

Each ONNX node of a segment costs ``op_overhead + max(flops / flops_rate(op), bytes /
bandwidth)``; an activation (Relu, Clip...) or residual Add that directly follows a Conv or
Gemm is fused into it, as inference runtimes do (no overhead, no extra traffic but the Add's
second input); shape-only nodes (Reshape, Flatten...) cost only their overhead. A segment
adds one ``call_overhead`` (a table latency includes one ``session.run``). Energy is
``active_power_w * latency``. The estimate grows with FLOPs for equal shapes.

Counts come from the exported graph (``onnx`` shape inference), i.e. what the runtime
executes: BatchNorm is already folded into Conv by the exporter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hapi_dse.errors import ArtefactError
from hapi_dse.profiling.base import Profiler, ProfileResult, ProgressFn, make_row
from hapi_dse.profiling.manifest import Manifest
from hapi_dse.profiling.specs import DeviceSpec

FUSABLE_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"}
FUSE_INTO = {"Conv", "Gemm", "MatMul"}
SHAPE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Constant"}
POOL_OPS = {
    "GlobalAveragePool",
    "GlobalMaxPool",
    "ReduceMean",
    "ReduceMax",
    "AveragePool",
    "MaxPool",
}
BYTES_PER_ELEMENT = 4  # float32


@dataclass(frozen=True)
class NodeCost:
    """The work of one ONNX node. ``kind`` is the op type, or ``DepthwiseConv``."""

    kind: str
    flops: int
    bytes: int
    fused: bool = False


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= max(int(d), 1)
    return n


def graph_costs(path: str | Path) -> list[NodeCost]:
    """FLOPs and bytes moved by every node of an ONNX file (static shapes)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    try:
        model = shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception as e:  # DecodeError, ValidationError, OSError
        raise ArtefactError(f"{path}: cannot read the ONNX graph ({e})") from None
    g = model.graph
    shapes: dict[str, list[int]] = {}
    for vi in [*g.input, *g.output, *g.value_info]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    inits = {t.name: list(numpy_helper.to_array(t).shape) for t in g.initializer}
    shapes.update(inits)
    producer: dict[str, str] = {}
    costs: list[NodeCost] = []
    for node in g.node:
        ins = [shapes.get(i, []) for i in node.input if i]
        outs = [shapes.get(o, []) for o in node.output if o]
        out_n = sum(_numel(s) for s in outs if s)
        in_n = sum(_numel(s) for s in ins if s)
        op = node.op_type
        prev = producer.get(node.input[0], "") if node.input else ""
        kind = op
        flops = 0
        traffic = (in_n + out_n) * BYTES_PER_ELEMENT
        fused = False
        if op == "Conv":
            w = inits.get(node.input[1]) or ins[1]
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            k = _numel(w[1:]) if len(w) > 1 else 1  # (Cin/group) * kh * kw
            flops = 2 * out_n * k
            if group > 1 and group == (ins[0][1] if len(ins[0]) > 1 else 0):
                kind = "DepthwiseConv"
        elif op in ("Gemm", "MatMul"):
            a_shape = ins[0]
            kdim = a_shape[-1] if a_shape else 1
            if op == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
                kdim = a_shape[0]
            flops = 2 * out_n * kdim
        elif op in POOL_OPS:
            flops = in_n
        elif op in SHAPE_OPS:
            traffic = 0
        else:  # element-wise
            flops = out_n
        if op in FUSABLE_ACTIVATIONS and prev in FUSE_INTO:
            fused, flops, traffic = True, 0, 0
        elif op == "Add" and prev in FUSE_INTO | {"FusedAdd"}:
            fused, traffic = True, _numel(ins[1]) * BYTES_PER_ELEMENT if len(ins) > 1 else 0
        costs.append(NodeCost(kind=kind, flops=int(flops), bytes=int(traffic), fused=fused))
        for o in node.output:
            producer[o] = "FusedAdd" if fused and op == "Add" else (prev if fused else op)
    return costs


def estimate_s(costs: list[NodeCost], spec: DeviceSpec) -> float:
    """Seconds for one ``session.run`` of a graph with these nodes on ``spec``."""
    t = spec.call_overhead_us * 1e-6
    bw = spec.mem_bandwidth_bytes_per_s
    for c in costs:
        if not c.fused:
            t += spec.op_overhead_s(c.kind)
        compute = c.flops / spec.flops_rate(c.kind) if c.flops else 0.0
        t += max(compute, c.bytes / bw)
    return t


#: operators of one exit decision as hapi exports it (hapi_dse.deploy.graph.fires), its
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
        stage_entry_ms=spec.op_overhead_s("Conv") * 1e3 + op_ms,
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
            lat_ms = estimate_s(graph_costs(manifest.path(seg)), self.spec) * 1e3
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
            "profiler": "roofline",
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
