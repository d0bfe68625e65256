"""A network graph from the TorchScript exporter, rewritten to the dynamo exporter's operators.

The dynamo exporter takes ~4.7 s here for the blocks and four heads of the bundled example
(imports, ``torch.export`` tracing, decompositions, optimisation): most of a first
``hapi export``. The TorchScript exporter writes the same network in ~0.8 s with the same
operators but three: ``GlobalAveragePool`` where dynamo writes ``ReduceMean`` over the last
two axes, ``Flatten`` where it writes ``Reshape`` to ``(1, N)``, and arithmetic on parameters
alone (an ``sdn`` head's ``sigmoid(alpha)``) that dynamo folds into constants.
:func:`torchscript_network` rewrites those three; BatchNorm is folded into the convolutions by
both (the folded weights agree to 1e-7 relative: float rounding of the two folding codes).
A graph holding any other operator than :data:`SAME_OPERATORS` is refused (``None``): the
caller exports it with dynamo. Either way the graph is checked against PyTorch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: operators the two exporters write alike (same inputs and attributes) for hapi's layers
SAME_OPERATORS = frozenset(
    {"Conv", "Relu", "Add", "Gemm", "MaxPool", "AveragePool", "Mul", "ReduceMean", "Reshape"}
)
#: how a graph built here is described (export sidecars, cache keys)
BUILDER = "torchscript, rewritten to the dynamo exporter's operators"


def torchscript_network(
    module: Any,
    x: Any,
    path: Path,
    output_names: Sequence[str],
    opset: int,
) -> Any | None:
    """``module`` exported by the TorchScript exporter (``onnx.checker`` only: the caller
    compares the rewritten graph, the one it uses, with PyTorch) and rewritten; ``None`` when
    it holds an operator the rewrite does not know, or when that exporter fails (a torch
    without it, a module it cannot trace): the caller exports with dynamo. ``module`` is left
    in eval mode (:func:`~hapi_dse.onnx_tools.torch_export.export_onnx` puts it back: this
    exporter may restore ``training=True`` on submodules, PITFALLS)."""
    import onnx

    from hapi_dse.errors import HapiError, interrupt_in
    from hapi_dse.onnx_tools.torch_export import export_onnx
    from hapi_dse.readers import read_onnx

    try:
        export_onnx(
            module, (x,), path, input_names=["x"], output_names=list(output_names),
            opset=opset, dynamo=False, compare=False,
        )  # fmt: skip
        model = read_onnx(path)
    except (HapiError, RuntimeError, ValueError, TypeError, AttributeError) as e:
        interrupt = interrupt_in(e)
        if interrupt is not None:
            raise interrupt from None
        log.debug("TorchScript export refused (%s): dynamo instead", e)
        return None
    if any(n.op_type == "If" or n.domain not in ("", "ai.onnx") for n in model.graph.node):
        return None
    _fold_constants(model)
    model = onnx.shape_inference.infer_shapes(model)
    _rewrite(model)
    if any(n.op_type not in SAME_OPERATORS for n in model.graph.node):
        return None
    del model.graph.value_info[:]
    return model


def _fold_constants(model: Any) -> None:
    """Replace every node whose inputs are all initializers (or constants) by its value."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    known = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep = []
    for node in graph.node:
        if node.op_type == "Constant":
            value = helper.get_attribute_value(node.attribute[0])
            known[node.output[0]] = numpy_helper.to_array(value)
            continue
        if node.input and all(i in known for i in node.input) and node.output[0] not in outputs:
            tiny = helper.make_graph(
                [node],
                "fold",
                [helper.make_tensor_value_info(i, _elem(known[i]), known[i].shape)
                 for i in dict.fromkeys(node.input)],
                [helper.make_tensor_value_info(o, 0, None) for o in node.output],
            )  # fmt: skip
            ev = ReferenceEvaluator(helper.make_model(tiny, opset_imports=model.opset_import))
            for name, value in zip(node.output, ev.run(None, {i: known[i] for i in node.input}),
                                   strict=True):  # fmt: skip
                known[name] = np.asarray(value)
            continue
        keep.append(node)
    used = {i for n in keep for i in n.input} | outputs
    del graph.node[:]
    graph.node.extend(keep)
    have = {t.name for t in graph.initializer}
    graph.initializer.extend(
        numpy_helper.from_array(np.asarray(known[n]), n) for n in sorted(used - have) if n in known
    )
    live = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)


def _elem(arr: np.ndarray) -> int:
    from onnx import helper

    return int(helper.np_dtype_to_tensor_dtype(arr.dtype))


def _rewrite(model: Any) -> None:
    """``GlobalAveragePool`` -> ``ReduceMean(axes=[-1, -2], keepdims=1)`` and
    ``Flatten(axis=1)`` -> ``Reshape(shape=[1, N], allowzero=1)``, as dynamo writes them."""
    from onnx import helper, numpy_helper

    graph = model.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*graph.value_info, *graph.input, *graph.output)}  # fmt: skip
    count = 0
    for k, node in enumerate(graph.node):
        if node.op_type == "GlobalAveragePool":
            count += 1
            axes = f"hapi_rewrite_axes_{count}"
            graph.initializer.append(numpy_helper.from_array(np.array([-1, -2], np.int64), axes))
            new = helper.make_node(
                "ReduceMean", [node.input[0], axes], list(node.output), name=node.name,
                keepdims=1, noop_with_empty_axes=0,
            )  # fmt: skip
        elif node.op_type == "Flatten":
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = shapes.get(node.input[0], [])
            if axis != 1 or len(shape) < 2 or not all(d > 0 for d in shape):
                continue  # left as is: refused by the operator check
            count += 1
            target = f"hapi_rewrite_shape_{count}"
            flat = [shape[0], int(np.prod(shape[1:]))]
            graph.initializer.append(numpy_helper.from_array(np.array(flat, np.int64), target))
            new = helper.make_node(
                "Reshape", [node.input[0], target], list(node.output), name=node.name, allowzero=1
            )
        else:
            continue
        graph.node[k].CopyFrom(new)
