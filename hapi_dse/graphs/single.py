"""The one-graph deployment of a design, built, checked and written: :func:`write_single_graph`.

``hapi export --format onnx`` (:mod:`hapi_dse.deploy.single`) and the deployment probes of
``hapi profile`` (:mod:`hapi_dse.graphs.probes`) both call it, so what is profiled is what is
exported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.onnx_tools import CHECK_ATOL, ExportReport


@dataclass
class BuiltGraph:
    """What :func:`write_single_graph` did: the exporter's report and the checks."""

    report: ExportReport
    moved: int
    census: dict[str, Any]
    diffs: dict[str, float]
    timings: dict[str, float]


def write_single_graph(
    net: Any,
    design: Any,
    temps: list[float],
    out: Path,
    *,
    example: tuple[np.ndarray, ...],
    checks: list[tuple[np.ndarray, ...]],
    opset: int,
    layout_anchor: bool = True,
    metadata: dict[str, str] | None = None,
) -> BuiltGraph:
    """Export ``design`` as the one-graph deployment (:class:`DesignGraph`) to ``out``.

    ``example`` and each of ``checks`` are ``(image,)`` or ``(image, thresholds)``; the
    temperatures are ``temps``. The searched thresholds and ``temps`` become the defaults of
    the optional ``thresholds``/``temperatures`` inputs
    (:func:`~hapi_dse.graphs.onnx_passes.make_inputs_optional`). The graph is checked
    (``onnx.checker``, and onnxruntime against PyTorch on ``example`` and every check input,
    with and without the default inputs) and written atomically. ``hapi export`` and the
    deployment probes of ``hapi profile`` both build their graphs here, so what is profiled
    is what is exported.
    """
    import torch

    from hapi_dse.graphs import compose
    from hapi_dse.graphs.graph import DesignGraph, exit_heads, input_names
    from hapi_dse.onnx_tools.network import with_network

    module = DesignGraph(net, design, layout_anchor=layout_anchor, eager=True).eval()
    names = input_names(design)
    outputs = ["logits", "exit_index"]
    thr0 = torch.tensor([e.threshold for e in design.exits], dtype=torch.float32)
    temp_t = torch.tensor(temps, dtype=torch.float32)

    def as_torch(inp: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, ...]:
        xi = torch.from_numpy(np.ascontiguousarray(inp[0]))
        if len(names) == 1:
            return (xi,)
        thr = torch.from_numpy(np.asarray(inp[1], np.float32)) if len(inp) > 1 else thr0
        return (xi, thr, temp_t)

    example_t = as_torch(example)
    checks_t = [as_torch(c) for c in checks]
    out.parent.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def assemble(network: Any) -> tuple[int, dict[str, Any], dict[str, float]]:
        nonlocal t0
        timings["network_graph"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        model = compose.design_model(
            network, net, design, layout_anchor=layout_anchor, input_names=names
        )
        return _finish(model, module, out, names, outputs, example, example_t, checks_t,
                       thr0, temp_t, metadata)  # fmt: skip

    # a cached network graph whose assembly fails its check is exported again
    network, built = with_network(
        net, tuple(example_t[0].shape), assemble, heads=exit_heads(design), opset=opset
    )
    moved, census, diffs = built
    timings["assemble_and_check"] = round(time.perf_counter() - t0, 2)
    report = ExportReport(
        path=out, opset=network.opset, exporter=network.exporter, max_abs_diff=diffs, checked=True
    )
    return BuiltGraph(report, moved, census, diffs, timings)


def _finish(
    model: Any,
    module: Any,
    out: Path,
    names: list[str],
    outputs: list[str],
    example: tuple[np.ndarray, ...],
    example_t: tuple[Any, ...],
    checks_t: list[tuple[Any, ...]],
    thr0: Any,
    temp_t: Any,
    metadata: dict[str, str] | None,
) -> tuple[int, dict[str, Any], dict[str, float]]:
    """The rewrites of the assembled graph, then its checks and the atomic write
    (:func:`~hapi_dse.onnx_tools.network.write_checked`, with the graph's default inputs)."""
    import hapi_dse.graphs.onnx_passes as onnx_passes
    from hapi_dse.onnx_tools.network import write_checked

    if len(names) > 1:
        onnx_passes.make_inputs_optional(
            model, {"thresholds": thr0.numpy(), "temperatures": temp_t.numpy()}
        )
    moved = onnx_passes.relocate_initializers(model)
    onnx_passes.strip_node_metadata(model)
    if metadata:
        onnx_passes.set_metadata(model, metadata)

    def defaults_match(tmp: Path) -> bool:
        return _defaults_match(tmp, example[0], module, example_t) if len(names) > 1 else True

    diffs = write_checked(
        model, out, module, [example_t, *checks_t], input_names=names, output_names=outputs,
        atol=CHECK_ATOL, also=defaults_match, what="the rewritten graph",
    )  # fmt: skip
    return moved, onnx_passes.op_census(model), diffs


def _defaults_match(path: Path, x0: np.ndarray, module: Any, example: tuple[Any, ...]) -> bool:
    """Omitting ``thresholds``/``temperatures`` gives the same result as feeding the defaults."""
    import torch

    from hapi_dse.onnx_tools import open_session

    sess = open_session(path)
    got = sess.run(None, {"input": x0})
    with torch.no_grad():
        ref = module(*example)
    return bool(
        np.allclose(got[0], ref[0].numpy(), atol=CHECK_ATOL) and int(got[1][0]) == int(ref[1][0])
    )
