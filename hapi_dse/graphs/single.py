"""``hapi export --format onnx``: the whole design as one graph, its exits inside (``If``).

:func:`write_single_graph` builds, checks and writes the graph; ``hapi export`` and the
deployment probes of ``hapi profile`` (:mod:`hapi_dse.graphs.probes`) both call it, so what
is profiled is what is exported. :func:`export_single` adds what ``hapi export`` records:
the design as ``hapi.*`` metadata properties of the graph and the sidecar's description of
the inputs, outputs, check and requirements.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.atomic import atomic_path
from hapi_dse.deploy.checks import CheckedDesign, check_info
from hapi_dse.deploy.load import META_PREFIX
from hapi_dse.errors import ArtefactError, HapiError
from hapi_dse.onnx_tools import CHECK_ATOL, ExportMismatchError, ExportReport
from hapi_dse.provenance import sha256_file


def _metadata(common: dict[str, Any]) -> dict[str, str]:
    """What ``hapi eval`` reads back (:func:`~hapi_dse.deploy.load.open_export`)."""
    keys = (
        "format",
        "model_id",
        "run",
        "design",
        "design_sha256",
        "device",
        "slos",
        "exits",
        "classes",
        "normalization",
        "input_shape",
    )
    return {META_PREFIX + k: json.dumps(common[k]) for k in keys}


def export_single(
    checked: CheckedDesign, common: dict[str, Any], *, out: Path, opset: int, layout_anchor: bool
) -> dict[str, Any]:
    """Write the design to the ``.onnx`` file ``out``, checked as ``checked`` plans; returns
    the sidecar content (``common`` and what this export adds)."""
    from hapi_dse.graphs.graph import input_names

    design, x, plan = checked.design, checked.x, checked.plan
    names = input_names(design)

    def feed(i: int) -> tuple[Any, ...]:
        xi = x[plan.samples[i] : plan.samples[i] + 1]
        return (xi,) if len(names) == 1 else (xi, np.asarray(plan.thresholds[i], np.float32))

    timings = dict(common["timings_s"])
    built = write_single_graph(
        checked.net,
        design,
        checked.temps,
        out,
        example=(x[:1],),
        checks=[feed(i) for i in range(len(plan.samples))],
        opset=opset,
        layout_anchor=layout_anchor,
        metadata=_metadata(common),
    )
    timings.update(built.timings)
    report = built.report
    info = dict(common)
    info.update(
        {
            "timings_s": timings,
            "file": out.name,
            "sha256": sha256_file(out),
            "opset": report.opset,
            "exporter": report.exporter,
            "inputs": _describe_inputs(names, len(design.exits), common["input_shape"]),
            "outputs": {
                "logits": "float32 (1, classes): raw logits of the exit taken",
                "exit_index": "int64 (1,): index into 'exits' (the last is the final classifier)",
            },
            "layout_anchor": layout_anchor,
            "relocated_initializers": built.moved,
            "graph": built.census,
            "check": check_info(plan, built.diffs, "full"),
            "requires": _requirements(opset, layout_anchor),
        }
    )
    return info


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
    from hapi_dse.graphs.graph import DesignGraph, input_names
    from hapi_dse.onnx_tools.network import network_model

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
    fresh = False
    while True:  # a cached network graph whose assembly fails its check is exported again
        network = network_model(
            net, tuple(example_t[0].shape), heads=_heads(design), opset=opset, fresh=fresh
        )
        timings["network_graph"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        model = compose.design_model(
            network, net, design, layout_anchor=layout_anchor, input_names=names
        )
        try:
            built = _finish(model, module, out, names, outputs, example, example_t, checks_t,
                            thr0, temp_t, metadata)  # fmt: skip
        except HapiError:
            if not network.cached:
                raise
            fresh = True
            continue
        break
    moved, census, diffs = built
    timings["assemble_and_check"] = round(time.perf_counter() - t0, 2)
    report = ExportReport(
        path=out, opset=network.opset, exporter=network.exporter, max_abs_diff=diffs, checked=True
    )
    return BuiltGraph(report, moved, census, diffs, timings)


def _heads(design: Any) -> list[tuple[int, str]]:
    """The heads the design runs: all the network graph needs besides the blocks and the
    final classifier (a cold cache exports only those)."""
    return [(e.position, e.head) for e in design.exits]


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
    """The rewrites of the assembled graph, its checks, and the atomic write."""
    import onnx

    import hapi_dse.graphs.onnx_passes as onnx_passes
    from hapi_dse.onnx_tools import compare_with_torch

    if len(names) > 1:
        onnx_passes.make_inputs_optional(
            model, {"thresholds": thr0.numpy(), "temperatures": temp_t.numpy()}
        )
    moved = onnx_passes.relocate_initializers(model)
    onnx_passes.strip_node_metadata(model)
    if metadata:
        onnx_passes.set_metadata(model, metadata)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ArtefactError(f"{out}: onnx.checker rejected the rewritten graph: {e}") from None
    census = onnx_passes.op_census(model)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
        diffs = compare_with_torch(module, tmp, names, outputs, [example_t, *checks_t])
        ok = _defaults_match(tmp, example[0], module, example_t) if len(names) > 1 else True
        if any(not d <= CHECK_ATOL for d in diffs.values()) or not ok:
            raise ExportMismatchError(out, diffs, CHECK_ATOL)
    return moved, census, diffs


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


def _describe_inputs(names: list[str], m: int, shape: list[int]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "name": "input",
            "dtype": "float32",
            "shape": shape,
            "note": "normalised image: (pixel/255 - mean) / std",
        }
    ]
    if len(names) > 1:
        out += [
            {
                "name": "thresholds",
                "dtype": "float32",
                "shape": [m],
                "optional": True,
                "onnx_type": "optional(tensor(float))",
                "default": "the searched thresholds (when omitted or None)",
                "note": "optional; feed to change the exit thresholds without re-exporting",
            },
            {
                "name": "temperatures",
                "dtype": "float32",
                "shape": [m],
                "optional": True,
                "onnx_type": "optional(tensor(float))",
                "default": "model.json temperatures (when omitted or None)",
                "note": "optional; calibration temperature of each exit",
            },
        ]
    return out


def _requirements(opset: int, layout_anchor: bool) -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "runtime": f"any ONNX runtime with opset {opset}: standard ai.onnx operators only "
        "(If for the exits); batch size 1",
        "fast_path": "onnxruntime CPUExecutionProvider at its default ORT_ENABLE_ALL applies "
        "its NCHWc layout inside the If branches: every initializer sits in the "
        "subgraph that uses it"
        + (
            " and each branch starts with an identity 1x1 Conv (layout anchor)"
            if layout_anchor
            else ""
        ),
        "tested_with": {"onnxruntime": ort.__version__},
    }
