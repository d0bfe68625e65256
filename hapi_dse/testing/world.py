"""A small world of valid inputs to every ``hapi`` command, for tests that break one thing
at a time (``tests/test_faults_inputs.py``, ``test_readers.py``, ``test_fuzz_readers.py``): a
synthetic run and its profile table, a search result, a design, a run that builds a
registered backbone, exported segments, a staged export and ONNX files. Hand-made: no
training and no export; built in about a second.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.testing.cli import search_args
from hapi_dse.testing.synthetic import write_synthetic_run, write_synthetic_table

DEVICE = "devA"


def onnx_identity(path: Path, shape: list[int], meta: dict[str, str] | None = None) -> None:
    """An ONNX graph ``y = x`` of ``shape``, with ``meta`` as its metadata properties."""
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    save(model, str(path))


def _stage(path: Path, last: bool) -> None:
    """A stage graph of a staged export: logits (1, 4) from the input; before the final stage
    also the features for the next stage and the exit decision (temperature < threshold)."""
    from onnx import TensorProto, helper, numpy_helper, save

    f = TensorProto.FLOAT
    x = helper.make_tensor_value_info("x", f, [1, 1, 8, 8])
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "starts"),
        numpy_helper.from_array(np.array([4], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["logits"]),
    ]
    inputs = [x]
    outputs = [helper.make_tensor_value_info("logits", f, [1, 4])]
    if not last:
        inputs += [
            helper.make_tensor_value_info("threshold", f, [1]),
            helper.make_tensor_value_info("temperature", f, [1]),
        ]
        nodes += [
            helper.make_node("Identity", ["x"], ["features"]),
            helper.make_node("Less", ["temperature", "threshold"], ["fire"]),
        ]
        outputs += [
            helper.make_tensor_value_info("features", f, [1, 1, 8, 8]),
            helper.make_tensor_value_info("fire", TensorProto.BOOL, [1]),
        ]
    graph = helper.make_graph(nodes, "stage", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    save(model, str(path))


#: the design of the world's design.json (its model_id added): one max-softmax exit
DESIGN: dict[str, Any] = {
    "schema_version": 1,
    "device": DEVICE,
    "policy": "max_softmax",
    "policy_params": {},
    "exits": [{"position": 1, "head": "linear", "threshold": 0.9}],
}


def write_world(root: Path) -> Path:
    """The world under ``root`` (see the module's docstring); returns ``root``."""
    from hapi_dse.cli import main

    run = write_synthetic_run(root / "run", n_val=120, n_test=120, num_blocks=4)
    write_synthetic_table(run, DEVICE, root / "profiles")
    mid = json.loads((run / "model.json").read_text())["model_id"]
    (root / "design.json").write_text(json.dumps({**DESIGN, "model_id": mid}))

    # a search result of the synthetic run
    argv = search_args(
        run, root / "profiles", root / "result", "--slo", "latency=50ms", device=DEVICE, trials=12
    )
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit as e:
            assert not e.code, f"the world's search failed ({e.code})"

    # a run that builds a registered backbone (resnet20 on digits): model, export, profile
    trun = root / "trun"
    shutil.copytree(run, trun)
    model = json.loads((trun / "model.json").read_text())
    model.update(
        arch={
            "backbone": "resnet20",
            "backbone_kwargs": {},
            "heads": ["linear", "conv"],
            "input_shape": [1, 8, 8],
            "num_classes": 10,
        },
        dataset="digits",
        temperatures=[1.0] * len(model["columns"]),
    )
    (trun / "model.json").write_text(json.dumps(model))
    # not a state dict: seeded random bytes after a pickle SETITEM, on which torch's
    # unpickler raises IndexError (which once escaped as a traceback, for some random bytes)
    (trun / "weights.pt").write_bytes(b"s" + random.Random(0).randbytes(4095))
    (root / "tdesign.json").write_text(json.dumps({**DESIGN, "model_id": mid}))

    # exported segments of a 1-block model (what 'hapi profile --onnx-dir' reads)
    segs = root / "segs"
    segs.mkdir()
    shape = [1, 1, 8, 8]
    entries = []
    for kind, pos, head in (("block", 0, ""), ("head", 0, "linear"), ("final", 0, "final")):
        name = f"{kind}{pos}{head}.onnx"
        onnx_identity(segs / name, shape)
        entries.append((kind, pos, head, name))
    onnx_identity(segs / "noop.onnx", shape)
    entries.append(("noop", 0, "", "noop.onnx"))
    manifest = {
        "schema_version": 1,
        "model_id": "segmodel-0",
        "batch": 1,
        "opset": 18,
        "exporter": "test",
        "segments": [
            {
                "kind": k,
                "position": p,
                "head": h,
                "file": f,
                "input_name": "x",
                "input_shape": shape,
                "output_name": "y",
                "flops": 100,
                "params": 10,
            }
            for k, p, h, f in entries
        ],
    }
    (segs / "segments.json").write_text(json.dumps(manifest))

    # a staged export of a one-exit design of the synthetic run (hand-made stage graphs)
    staged = root / "staged"
    staged.mkdir()
    _stage(staged / "stage_0.onnx", last=False)
    _stage(staged / "stage_1.onnx", last=True)
    (staged / "manifest.json").write_text(
        json.dumps(
            {
                "schema_version": 1,
                "format": "staged",
                "policy": "max_softmax",
                "patience": 0,
                "thresholds": [0.9],
                "temperatures": [1.0],
                "stages": [
                    {"file": "stage_0.onnx", "input_shape": shape},
                    {"file": "stage_1.onnx", "input_shape": shape},
                ],
                "model_id": mid,
            }
        )
    )
    (staged / "export.json").write_text(
        json.dumps({"design": {k: DESIGN[k] for k in ("policy", "policy_params", "exits")}})
    )
    # a single-graph file carrying hapi's metadata (its graph is not hapi's: never run)
    design_meta = json.dumps({k: DESIGN[k] for k in ("policy", "policy_params", "exits")})
    onnx_identity(root / "model.onnx", shape, {"hapi.design": design_meta})
    (root / "space.toml").write_text("[exits]\ncount = [0, 2]\n")
    return root
