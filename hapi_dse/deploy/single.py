"""``hapi export --format onnx``: the whole design as one graph, its exits inside (``If``).

The graph is built, checked and written by :func:`~hapi_dse.graphs.single.write_single_graph`
(which the deployment probes of ``hapi profile`` call too, so what is profiled is what is
exported). :func:`export_single` adds what ``hapi export`` records: the design as ``hapi.*``
metadata properties of the graph and the sidecar's description of the inputs, outputs, check
and requirements.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.deploy.checks import CheckedDesign, check_info
from hapi_dse.deploy.load import META_PREFIX
from hapi_dse.graphs.single import write_single_graph
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
