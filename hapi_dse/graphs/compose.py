"""Design graphs assembled in ONNX from cuts of the exported network (no export per design).

``torch.export`` of a :class:`~hapi_dse.graphs.graph.DesignGraph` (nested ``torch.cond``)
took 20-40 s for the bundled ResNet-32. Here the same graph is assembled from the network
exported once (:mod:`hapi_dse.onnx_tools.network`, cached): each stage's blocks and head are
cut out of it and spliced in, the exit rule is the policy's own
(:meth:`~hapi_dse.cost.policies.ThresholdPolicy.decision`) run on ONNX nodes (the operations
of :func:`~hapi_dse.graphs.graph.fires`, in the same order, float32), and each exit is an
``If`` whose ``else`` branch holds the rest of the network, exactly the structure the
exporter wrote for ``torch.cond``. Stage graphs of the staged format are assembled the same
way. Callers check the result against the PyTorch modules, as they checked the exports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hapi_dse.cost.policies import ThresholdPolicy, get_policy
from hapi_dse.graphs.graph import stage_plan


class _Scope:
    """Nodes and initializers of one graph being built; names made unique model-wide."""

    def __init__(self, owner: _Names) -> None:
        self.names = owner
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        out = self.names.new(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def const(self, value: Any, dtype: Any, hint: str = "const") -> str:
        from onnx import numpy_helper

        name = self.names.new(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def const_node(self, value: Any, dtype: Any, out: str) -> str:
        from onnx import helper, numpy_helper

        tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype))
        self.nodes.append(helper.make_node("Constant", [], [out], value=tensor))
        return out

    def splice(self, piece: Any, source: str, prefix: str, out: str | None = None) -> str:
        """Copy the nodes and initializers of a cut (input ``x``, output ``y``) reading
        ``source``; returns the name of its output here (``out`` when given)."""
        tag = self.names.new(prefix)
        rename = {"x": source}
        if out is not None:
            rename["y"] = out

        def name(n: str) -> str:
            if n == "":
                return n
            if n not in rename:
                rename[n] = f"{tag}/{n}"
            return rename[n]

        for init in piece.graph.initializer:
            t = type(init)()
            t.CopyFrom(init)
            t.name = name(init.name)
            self.inits.append(t)
        for node in piece.graph.node:
            n = type(node)()
            n.CopyFrom(node)
            n.name = f"{tag}/{node.name}" if node.name else ""
            n.input[:] = [name(i) for i in node.input]
            n.output[:] = [name(o) for o in node.output]
            self.nodes.append(n)
        return name("y")

    def graph(self, name: str, outputs: Sequence[tuple[str, str, int, list[int]]]) -> Any:
        from onnx import helper

        vis = [helper.make_tensor_value_info(n, t, shape) for n, _, t, shape in outputs]
        nodes = list(self.nodes)
        made = {o for node in nodes for o in node.output}
        flat = not any(node.op_type == "If" for node in nodes)  # no subgraph reads a name
        for n, src, _, _ in outputs:
            if src == n:
                continue
            if flat and src in made:  # name the producer's output (no Identity needed)
                for node in nodes:
                    node.input[:] = [n if i == src else i for i in node.input]
                    node.output[:] = [n if o == src else o for o in node.output]
            else:  # an outer-scope value (an exit's logits): copied, as torch's clone()
                nodes.append(helper.make_node("Identity", [src], [n]))
        return helper.make_graph(nodes, name, [], vis, initializer=self.inits)


class _Names:
    def __init__(self) -> None:
        self.count = 0

    def new(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"


def _stage(
    scope: _Scope, network: Any, net: Any, lo: int, hi: int, head: tuple[int, str], x: str,
    anchor: bool, out: str | None = None,
) -> tuple[str, str]:  # fmt: skip
    """Blocks ``lo..hi`` (after an identity 1x1 anchor conv when ``anchor``) then the head
    ``(position, type)`` on their output; returns the feature and logit names."""
    from hapi_dse.onnx_tools.network import block_name, head_name

    h = x
    if anchor:
        c = int(net.backbone.exits[lo - 1].channels)
        w = scope.const(np.eye(c, dtype=np.float32).reshape(c, c, 1, 1), np.float32, "anchor")
        h = scope.node("Conv", [h, w], dilations=[1, 1], group=1, pads=[0, 0, 0, 0], strides=[1, 1])
    if hi >= lo:
        source = "x" if lo == 0 else block_name(lo - 1)
        h = scope.splice(network.cut(source, block_name(hi)), h, f"blocks_{lo}_{hi}")
    pos, kind = head
    piece = network.cut(block_name(pos), head_name(pos, kind))
    return h, scope.splice(piece, h, f"head_{pos}_{kind}", out)


class _OnnxOps:
    """:class:`~hapi_dse.cost.policies.Ops` as nodes of ``scope``: each operation adds its
    node and returns the name of its output."""

    def __init__(self, scope: _Scope) -> None:
        self.scope = scope
        self.axes = scope.const([-1], np.int64, "axes")

    def _node(self, op: str, *inputs: str, **attrs: Any) -> str:
        return self.scope.node(op, list(inputs), **attrs)

    def div(self, a: str, b: str) -> str:
        return self._node("Div", a, b)

    def sub(self, a: str, b: str) -> str:
        return self._node("Sub", a, b)

    def mul(self, a: str, b: str) -> str:
        return self._node("Mul", a, b)

    def neg(self, a: str) -> str:
        return self._node("Neg", a)

    def exp(self, a: str) -> str:
        return self._node("Exp", a)

    def reciprocal(self, a: str) -> str:
        return self._node("Reciprocal", a)

    def max_keep(self, a: str) -> str:
        return self._node("ReduceMax", a, self.axes, keepdims=1)

    def sum(self, a: str) -> str:
        return self._node("ReduceSum", a, self.axes, keepdims=0)

    def log_softmax(self, a: str) -> str:
        return self._node("LogSoftmax", a, axis=-1)

    def div_const(self, a: str, value: float, hint: str) -> str:
        return self._node("Div", a, self.scope.const(value, np.float32, hint))

    def ge(self, a: str, b: str) -> str:
        return self._node("GreaterOrEqual", a, b)

    def le(self, a: str, b: str) -> str:
        return self._node("LessOrEqual", a, b)


def _fires(scope: _Scope, rule: ThresholdPolicy, z: str, thr: str, temp: str, classes: int) -> str:
    """The exit rule of :func:`~hapi_dse.graphs.graph.fires` as ONNX operators: bool ``(1,)``."""
    return rule.decision(_OnnxOps(scope), z, thr, temp, classes)


def design_model(
    network: Any, net: Any, design: Any, *, layout_anchor: bool, input_names: list[str]
) -> Any:
    """The one-graph deployment of ``design`` (what exporting a ``DesignGraph`` gives)."""
    from onnx import TensorProto, helper

    names = _Names()
    plan = stage_plan(design, net.backbone.num_blocks)
    m = len(design.exits)
    classes = int(net.num_classes)
    rule = get_policy(design.policy)
    src = network.model
    params = input_names[1:]  # thresholds, temperatures (threshold policies)

    def tail(
        scope: _Scope, i: int, x: str, preds: list[str], out: tuple[str, str]
    ) -> tuple[str, str]:
        """Stage ``i`` and what follows, writing the logits and exit index to ``out``."""
        lo, hi, head = plan[i]
        anchor = layout_anchor and lo > 0
        if i == m:
            _stage(scope, network, net, lo, hi, head, x, anchor, out[0])
            return out[0], scope.const_node([m], np.int64, out[1])
        h, z = _stage(scope, network, net, lo, hi, head, x, anchor)
        if isinstance(rule, ThresholdPolicy):
            idx = scope.const(i, np.int64, "index")
            thr = scope.node("Gather", [params[0], idx], axis=0)
            temp = scope.node("Gather", [params[1], idx], axis=0)
            fire = _fires(scope, rule, z, thr, temp, classes)
        else:  # patience: the window of the last predictions
            pred = scope.node("ArgMax", [z], axis=-1, keepdims=0)
            preds = [*preds, pred][-max(design.patience, 1) :]
            if i + 1 < design.patience:
                return tail(scope, i + 1, h, preds, out)
            fire = scope.node("Equal", [preds[0], pred])
            for p in preds[1:]:
                fire = scope.node("And", [fire, scope.node("Equal", [p, pred])])
        take = _Scope(names)
        k_taken = take.const_node([i], np.int64, names.new("exit_index"))
        taken = take.graph(
            f"exit_{i}",
            [
                (names.new("logits"), z, TensorProto.FLOAT, [1, classes]),
                (k_taken, k_taken, TensorProto.INT64, [1]),
            ],
        )
        rest = _Scope(names)
        inner = (names.new("logits"), names.new("exit_index"))
        tail(rest, i + 1, h, preds, inner)
        go_on = rest.graph(
            f"after_exit_{i}",
            [
                (inner[0], inner[0], TensorProto.FLOAT, [1, classes]),
                (inner[1], inner[1], TensorProto.INT64, [1]),
            ],
        )
        cond = scope.node("Reshape", [fire, scope.const([], np.int64, "scalar")])
        scope.nodes.append(
            helper.make_node("If", [cond], list(out), then_branch=taken, else_branch=go_on)
        )
        return out

    main = _Scope(names)
    z, k = tail(main, 0, input_names[0], [], ("logits", "exit_index"))
    shape = [int(d.dim_value) for d in src.graph.input[0].type.tensor_type.shape.dim]
    inputs = [helper.make_tensor_value_info(input_names[0], TensorProto.FLOAT, shape)]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [m]) for n in params]
    graph = main.graph(
        "design",
        [
            ("logits", z, TensorProto.FLOAT, [1, classes]),
            ("exit_index", k, TensorProto.INT64, [1]),
        ],
    )
    graph.input.extend(inputs)
    return _model(src, graph)


def stage_model(network: Any, net: Any, design: Any, i: int, *, layout_anchor: bool) -> Any:
    """Stage ``i`` of the staged deployment (what exporting a ``StageGraph`` gives)."""
    from onnx import TensorProto, helper

    from hapi_dse.graphs.graph import stage_io

    names = _Names()
    m = len(design.exits)
    lo, hi, head = stage_plan(design, net.backbone.num_blocks)[i]
    last = i == m
    ins, outs = stage_io(design.policy, last)
    rule = get_policy(design.policy)
    scope = _Scope(names)
    h, z = _stage(scope, network, net, lo, hi, head, "x", layout_anchor and lo > 0)
    classes = int(net.num_classes)
    shape = [int(d.dim_value) for d in network.model.graph.input[0].type.tensor_type.shape.dim]
    if lo > 0:
        shape = _shape_of(network.model, lo - 1)
    feat_shape = _shape_of(network.model, hi) if hi >= lo else shape
    if last:
        results = [("logits", z, TensorProto.FLOAT, [1, classes])]
    elif isinstance(rule, ThresholdPolicy):
        fire = _fires(scope, rule, z, "threshold", "temperature", classes)
        results = [
            ("features", h, TensorProto.FLOAT, feat_shape),
            ("logits", z, TensorProto.FLOAT, [1, classes]),
            ("fire", fire, TensorProto.BOOL, [1]),
        ]
    else:
        pred = scope.node("ArgMax", [z], axis=-1, keepdims=0)
        results = [
            ("features", h, TensorProto.FLOAT, feat_shape),
            ("logits", z, TensorProto.FLOAT, [1, classes]),
            ("prediction", pred, TensorProto.INT64, [1]),
        ]
    assert [r[0] for r in results] == outs
    graph = scope.graph(f"stage_{i}", results)
    graph.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, shape))
    for n in ins[1:]:
        graph.input.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]))
    return _model(network.model, graph)


def _shape_of(model: Any, position: int) -> list[int]:
    from hapi_dse.onnx_tools.network import block_name

    out = next(o for o in model.graph.output if o.name == block_name(position))
    return [int(d.dim_value) for d in out.type.tensor_type.shape.dim]


def _model(src: Any, graph: Any) -> Any:
    from onnx import helper

    model = helper.make_model(graph, opset_imports=list(src.opset_import))
    model.ir_version = src.ir_version
    model.producer_name = src.producer_name
    model.producer_version = src.producer_version
    return model
