"""The work of every ONNX operator: its class, FLOPs and bytes moved, from its real shapes.

A device spec (:mod:`hapi_dse.profiling.specs`) gives each operator *class* an efficiency,
a parallel efficiency and an overhead; this module says which class an operator is and how
much work it does, so that one formula per class covers any graph:

======================  ==================================================================
class                   operators and work
======================  ==================================================================
``conv``                Conv with a kxk kernel (k > 1), dense or grouped:
                        ``2 * out * Cin/group * kh * kw`` FLOPs
``conv1x1``             Conv with a 1x1 kernel (pointwise), same formula
``depthwise``           Conv with ``group == Cin`` (one filter per channel), same formula
``gemm``                Gemm, MatMul: ``2 * out * K``
``pool``                MaxPool, AveragePool, LpPool: ``out * kh * kw`` (a kxk window reads
                        k*k inputs per output)
``global_pool``         GlobalAverage/MaxPool, Reduce*: one operation per input element
``elementwise``         activations, arithmetic, BatchNormalization, Softmax...: a fixed
                        number of operations per output element (:data:`ELEMENTWISE`)
``data``                Concat, Transpose, Pad, Slice, Split, Gather, Resize...: bytes only
                        (Resize: 4 operations per output when linear, 1 when nearest)
``shape``               Reshape, Flatten, Squeeze, Identity...: a view, its overhead only
``control``             If, Loop: its overhead plus the costliest branch's nodes
======================  ==================================================================

Bytes moved are every input (weights included) and output, 4 bytes an element (float32).
A BatchNormalization or an activation right after a Conv or Gemm, and a residual Add of a
Conv's output (then an activation after it), are fused into it as inference runtimes do
when nothing else reads the Conv's output (no overhead, no traffic but the Add's other
input). An operator with no formula is costed as an element-wise operator of
class ``other`` and named in a warning: never a silent zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hapi_dse.errors import ArtefactError

log = logging.getLogger(__name__)

OP_CLASSES = (
    "conv",
    "conv1x1",
    "depthwise",
    "gemm",
    "pool",
    "global_pool",
    "elementwise",
    "data",
    "shape",
    "control",
    "other",
)


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


#: operations per output element of element-wise operators
ELEMENTWISE: dict[str, int] = {
    **dict.fromkeys(
        _names(
            "Relu Add Sub Mul Div Neg Abs Max Min Sum Mean Greater Less Equal GreaterOrEqual "
            "LessOrEqual Not And Or Xor Where Cast Sign Floor Ceil Round Reciprocal PRelu "
            "LeakyRelu ArgMax ArgMin Dropout"
        ),
        1,
    ),
    **dict.fromkeys(_names("Clip BatchNormalization HardSigmoid Sqrt Pow"), 2),
    **dict.fromkeys(_names("HardSwish InstanceNormalization"), 4),
    **dict.fromkeys(_names("Sigmoid Tanh Exp Log Erf Elu Selu Softplus Mish Gelu"), 8),
    **dict.fromkeys(_names("Softmax LogSoftmax LayerNormalization TopK"), 10),
}
DATA_OPS = frozenset(
    _names(
        "Concat Transpose Pad Slice Split Gather GatherElements Tile Expand Resize Upsample "
        "DepthToSpace SpaceToDepth ScatterElements"
    )
)
SHAPE_OPS = frozenset(
    _names(
        "Reshape Flatten Squeeze Unsqueeze Identity Shape Constant Size ConstantOfShape Range "
        "OptionalHasElement OptionalGetElement Optional"
    )
)
POOL_OPS = frozenset({"MaxPool", "AveragePool", "LpPool"})
GLOBAL_POOL_OPS = frozenset(
    _names(
        "GlobalAveragePool GlobalMaxPool GlobalLpPool ReduceMean ReduceMax ReduceMin ReduceSum "
        "ReduceProd ReduceL1 ReduceL2 ReduceLogSumExp ReduceSumSquare"
    )
)
CONTROL_OPS = frozenset({"If", "Loop", "Scan"})
FUSABLE_AFTER_CONV = frozenset(
    {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "BatchNormalization"}
)

BYTES_PER_ELEMENT = 4  # float32


@dataclass(frozen=True)
class NodeCost:
    """The work of one ONNX node: its op type, class (:data:`OP_CLASSES`), FLOPs, bytes
    moved and output elements written. A fused node (an activation folded into its Conv)
    pays no overhead."""

    op: str
    cls: str
    flops: int
    bytes: int
    fused: bool = False
    outputs: int = 0


@dataclass
class GraphCosts:
    """Every node of a graph, and the operator types that had no formula."""

    nodes: list[NodeCost]
    unknown_ops: list[str] = field(default_factory=list)
    channel_block: int = 1

    @property
    def flops(self) -> int:
        return sum(n.flops for n in self.nodes)

    def __iter__(self) -> Any:
        return iter(self.nodes)

    def __getitem__(self, i: int) -> NodeCost:
        return self.nodes[i]

    def __len__(self) -> int:
        return len(self.nodes)


def op_class(op: str, attrs: dict[str, Any] | None = None, in_channels: int = 0) -> str:
    """The class of an operator (:data:`OP_CLASSES`); ``attrs`` and ``in_channels`` tell a
    Conv's kind (kernel size, groups)."""
    attrs = attrs or {}
    if op in ("Conv", "ConvTranspose"):
        group = int(attrs.get("group", 1))
        kernel = attrs.get("kernel_shape") or []
        if group > 1 and group == in_channels:
            return "depthwise"
        if kernel and all(int(k) == 1 for k in kernel):
            return "conv1x1"
        return "conv"
    if op in ("Gemm", "MatMul"):
        return "gemm"
    if op in POOL_OPS:
        return "pool"
    if op in GLOBAL_POOL_OPS:
        return "global_pool"
    if op in ELEMENTWISE:
        return "elementwise"
    if op in DATA_OPS:
        return "data"
    if op in SHAPE_OPS:
        return "shape"
    if op in CONTROL_OPS:
        return "control"
    return "other"


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= max(int(d), 1)
    return n


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def load_graph(path: str | Path) -> Any:
    """An ONNX model with inferred shapes; a file that is not an ONNX graph is an
    :class:`ArtefactError`."""
    from onnx import shape_inference

    from hapi_dse.readers import read_onnx

    model = read_onnx(path)  # one line for anything onnx cannot parse
    try:
        if not model.graph.node:
            raise ValueError("it has no nodes")
        return shape_inference.infer_shapes(model)
    except Exception as e:  # DecodeError, ValidationError, OSError, ValueError
        msg = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise ArtefactError(f"{path}: not an ONNX graph hapi can read ({msg})") from None


def graph_costs(path_or_model: str | Path | Any, channel_block: int = 1) -> GraphCosts:
    """FLOPs and bytes moved by every node of an ONNX graph (static shapes; a dynamic
    dimension counts as 1, i.e. batch 1).

    ``channel_block`` > 1 models a runtime with blocked convolution kernels (onnxruntime's
    NCHWc layout on x86: 8 channels with AVX2, 16 with AVX-512), as :class:`_Layout` says.
    """
    if isinstance(path_or_model, (str, Path)):
        model = load_graph(path_or_model)
    else:
        from onnx import shape_inference

        model = shape_inference.infer_shapes(path_or_model)
    shapes: dict[str, list[int]] = {}

    def collect(g: Any) -> None:
        for vi in [*g.input, *g.output, *g.value_info]:
            dims = vi.type.tensor_type.shape.dim
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
        for t in g.initializer:
            shapes[t.name] = [int(d) for d in t.dims]
        for node in g.node:
            for a in node.attribute:
                if a.g.node:
                    collect(a.g)

    collect(model.graph)
    inits = {t.name for t in model.graph.initializer}
    out = GraphCosts([], channel_block=channel_block)
    _nodes(model.graph, shapes, inits, out, _Layout(channel_block, shapes))
    for op in sorted(set(out.unknown_ops)):
        log.warning("no cost formula for ONNX operator %s: costed as element-wise", op)
    return out


class _Layout:
    """Which tensors a runtime with blocked kernels keeps in its blocked layout, and the
    reorders it inserts between layouts (onnxruntime's NCHWc transformer, as observed):

    - every Conv runs blocked, its output channels padded to a whole block (the padding is
      computed too: the FLOPs count it); it reads a plain (NCHW) input directly when its
      input channels are fewer than a block or not a multiple of one (the stem), else that
      input is reordered first (``ReorderInput``), as a depthwise Conv's always is;
    - a pool, global pool or element-wise node whose channels are a multiple of the block
      runs in the layout of its inputs; one whose channels are not runs plain, and a
      blocked input is reordered to it (``ReorderOutput``); element-wise nodes whose inputs
      are all blocked stay blocked whatever their channels;
    - anything else (Flatten, Gemm, a graph output...) reads plain tensors.

    A reorder costs a ``data`` node that reads and writes the tensor once; each tensor is
    reordered at most once each way.
    """

    AGNOSTIC = frozenset({"pool", "global_pool", "elementwise"})

    def __init__(self, block: int, shapes: dict[str, list[int]]) -> None:
        self.block = block
        self.shapes = shapes
        self.blocked: set[str] = set()
        self.reordered: set[tuple[str, bool]] = set()

    def _channels(self, name: str) -> int:
        s = self.shapes.get(name, [])
        return int(s[1]) if len(s) == 4 else 0

    def _reorder(self, name: str, to_blocked: bool, out: list[NodeCost]) -> None:
        if (name, to_blocked) in self.reordered:
            return
        self.reordered.add((name, to_blocked))
        n = _numel(self.shapes.get(name, []))
        op = "ReorderInput" if to_blocked else "ReorderOutput"
        out.append(NodeCost(op, "data", 0, 2 * n * BYTES_PER_ELEMENT, outputs=n))

    def padded(self, channels: int) -> int:
        return -(-channels // self.block) * self.block

    def _pad(self, cost: NodeCost, channels: int, traffic: bool = True) -> NodeCost:
        """``cost`` computed on ``channels`` padded to whole blocks."""
        if not channels or channels % self.block == 0:
            return cost
        pad = self.padded(channels) / channels
        return NodeCost(
            cost.op,
            cost.cls,
            int(cost.flops * pad),
            int(cost.bytes * pad) if traffic else cost.bytes,
            cost.fused,
            int(cost.outputs * pad),
        )

    def node(self, node: Any, cost: NodeCost, extra: list[NodeCost]) -> NodeCost:
        """Route ``node``'s inputs (reorders into ``extra``), mark its outputs; return its
        cost with a Conv's padded work."""
        if self.block <= 1:
            return cost
        b = self.block
        ins = [i for i in node.input if i and i in self.shapes and len(self.shapes[i]) == 4]
        outs = [o for o in node.output if o]
        if node.op_type == "Conv" and ins:
            x, cin, cout = ins[0], self._channels(ins[0]), self._channels(outs[0])
            if x not in self.blocked and (cost.cls == "depthwise" or cin % b == 0):
                self._reorder(x, True, extra)
            self.blocked.update(outs)
            return self._pad(cost, cout, traffic=False)
        ch = self._channels(outs[0]) if outs else 0
        if cost.cls in self.AGNOSTIC and ch:
            if cost.cls == "elementwise" and ins and all(i in self.blocked for i in ins):
                self.blocked.update(outs)
                return self._pad(cost, ch)
            elif ch % b == 0:
                if any(i in self.blocked for i in ins):
                    for i in ins:
                        if i not in self.blocked:
                            self._reorder(i, True, extra)
                    self.blocked.update(outs)
            else:
                for i in ins:
                    if i in self.blocked:
                        self._reorder(i, False, extra)
            return cost
        for i in node.input:
            if i in self.blocked:
                self._reorder(i, False, extra)
        return cost

    def outputs(self, g: Any, extra: list[NodeCost]) -> None:
        for o in g.output:
            if o.name in self.blocked:
                self._reorder(o.name, False, extra)


def _nodes(
    g: Any, shapes: dict[str, list[int]], inits: set[str], out: GraphCosts, layout: _Layout
) -> None:
    producer: dict[str, str] = {}
    consumers: dict[str, int] = {}
    for node in g.node:
        for i in node.input:
            consumers[i] = consumers.get(i, 0) + 1
    for o in g.output:
        consumers[o.name] = consumers.get(o.name, 0) + 1
    for node in g.node:
        op = node.op_type
        if op in CONTROL_OPS:
            branches = []
            for a in node.attribute:
                if a.g.node:
                    sub = GraphCosts([])
                    _nodes(a.g, shapes, inits, sub, _Layout(1, shapes))
                    branches.append(sub)
            out.nodes.append(NodeCost(op, "control", 0, 0))
            if branches:
                worst = max(branches, key=lambda b: sum(n.flops + n.bytes for n in b.nodes))
                out.nodes.extend(worst.nodes)
                out.unknown_ops.extend(u for b in branches for u in b.unknown_ops)
            for o in node.output:
                producer[o] = op
            continue
        cost = node_cost(node, shapes)
        reorders: list[NodeCost] = []
        cost = layout.node(node, cost, reorders)
        out.nodes.extend(reorders)
        ins = [i for i in node.input if i]
        sole = [i for i in ins if consumers.get(i, 0) == 1]  # inputs only this node reads
        if op == "BatchNormalization" and ins[:1] == sole[:1] and producer.get(ins[0]) == "Conv":
            cost, kind = NodeCost(op, cost.cls, 0, 0, True), "Conv"
        elif (
            op in FUSABLE_AFTER_CONV
            and ins[:1] == sole[:1]
            and producer.get(ins[0]) in ("Conv", "Conv+sum", "Gemm", "MatMul")
        ):
            cost, kind = NodeCost(op, cost.cls, 0, 0, True), "Conv+act"
        elif (
            op in ("Add", "Sum")
            and len(ins) == 2
            and any(producer.get(i) == "Conv" and i in sole for i in ins)
        ):
            into = next(j for j, i in enumerate(ins) if producer.get(i) == "Conv" and i in sole)
            other = ins[1 - into]
            second = _numel(shapes.get(other, [])) * BYTES_PER_ELEMENT
            cost, kind = NodeCost(op, cost.cls, 0, second, True), "Conv+sum"
        else:
            kind = op
        if cost.cls == "other":
            out.unknown_ops.append(op)
        out.nodes.append(cost)
        for o in node.output:
            producer[o] = kind
    layout.outputs(g, out.nodes)


def node_cost(node: Any, shapes: dict[str, list[int]]) -> NodeCost:
    """One node's class, FLOPs and bytes (no fusion: see :func:`graph_costs`)."""
    op = node.op_type
    attrs = _attrs(node)
    ins = [shapes.get(i, []) for i in node.input if i]
    outs = [shapes.get(o, []) for o in node.output if o]
    out_n = sum(_numel(s) for s in outs if s)
    in_n = sum(_numel(s) for s in ins if s)
    in_ch = ins[0][1] if ins and len(ins[0]) > 1 else 0
    cls = op_class(op, attrs, in_ch)
    traffic = (in_n + out_n) * BYTES_PER_ELEMENT
    flops = 0
    if cls in ("conv", "conv1x1", "depthwise"):
        w = ins[1] if len(ins) > 1 else []
        if op == "ConvTranspose":
            flops = 2 * _numel(ins[0]) * (_numel(w[1:]) if len(w) > 1 else 1)
        else:
            flops = 2 * out_n * (_numel(w[1:]) if len(w) > 1 else 1)  # Cin/group * kh * kw
    elif cls == "gemm":
        a = ins[0] if ins else []
        k = a[-1] if a else 1
        if op == "Gemm" and attrs.get("transA"):
            k = a[0] if a else 1
        flops = 2 * out_n * k
    elif cls == "pool":
        flops = out_n * _numel(list(attrs.get("kernel_shape", [1])))
    elif cls == "global_pool":
        flops = _numel(ins[0]) if ins else 0
    elif cls == "elementwise":
        flops = out_n * ELEMENTWISE[op]
    elif cls == "data":
        if op in ("Resize", "Upsample"):
            mode = attrs.get("mode", b"nearest")
            flops = out_n * (4 if b"linear" in (mode if isinstance(mode, bytes) else b"") else 1)
    elif cls in ("shape", "control"):
        traffic = 0
    else:  # other: element-wise, warned about by graph_costs
        flops = out_n
    outputs = 0 if cls in ("shape", "control") else out_n
    return NodeCost(op, cls, int(flops), int(traffic), outputs=int(outputs))
