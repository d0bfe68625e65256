"""hapi export: the design as ONNX with its exits inside, checked on every exit path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hapi_dse.onnx_tools import CHECK_ATOL, DEFAULT_OPSET
from hapi_dse.provenance import sha256_file


@pytest.fixture(scope="module")
def single_export(shared_export: dict) -> dict:
    """One export of a two-exit design of the tiny run, shared by the tests below."""
    return shared_export


def _session(path: Path):
    """The export as its user opens it: stock onnxruntime, no hapi code."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_export_sidecar_records_check_opset_and_design_hash(single_export: dict) -> None:
    out, info = single_export["out"], single_export["info"]
    side = json.loads(out.with_suffix(".export.json").read_text())
    assert side["opset"] == DEFAULT_OPSET
    assert side["design_sha256"] == sha256_file(single_export["design"])
    assert side["sha256"] == sha256_file(out)
    assert side["check"]["onnx_checker"] == "full" and side["check"]["passed"]
    # one checked sample per path: two exits and the final classifier
    assert [p["exit_index"] for p in side["check"]["paths"]] == [0, 1, 2]
    assert side["check"]["atol"] == CHECK_ATOL
    assert max(side["check"]["max_abs_diff"].values()) <= CHECK_ATOL
    # one If per exit, and one per optional input (thresholds, temperatures) picking its value
    assert side["graph"]["if_nodes"] == 2 + 2 and side["graph"]["domains"] == ["ai.onnx"]
    assert "any ONNX runtime" in side["requires"]["runtime"]
    assert info["exits"][-1]["head"] == "final"


def test_export_passes_full_onnx_checker_and_keeps_weights_in_branches(single_export: dict) -> None:
    import onnx

    model = onnx.load(str(single_export["out"]))
    onnx.checker.check_model(model, full_check=True)
    inputs = {i.name: i.type for i in model.graph.input}
    assert list(inputs) == ["input", "thresholds", "temperatures"]
    for name in ("thresholds", "temperatures"):  # optional inputs, not overridable initializers
        assert inputs[name].HasField("optional_type")
        assert inputs[name].optional_type.elem_type.tensor_type.shape.dim[0].dim_value == 2
    assert not {"thresholds", "temperatures"} & {t.name for t in model.graph.initializer}
    branch = next(
        a.g
        for n in model.graph.node
        if n.op_type == "If" and not n.input[0].endswith("_is_fed")  # the first exit's
        for a in n.attribute
        if a.name == "else_branch"
    )
    assert len(branch.initializer) > 0  # relocated for onnxruntime's layout transform


def test_onnx_matches_pytorch_on_every_exit_path(single_export: dict) -> None:
    """Each path forced through the threshold input: same exit, same logits as PyTorch."""
    import torch

    from hapi_dse.deploy.inputs import exit_temperatures, load_design, load_samples
    from hapi_dse.graphs.graph import DesignGraph
    from hapi_dse.run import RunDir

    run = RunDir(single_export["run"])
    dfile = load_design(single_export["design"])
    temps = np.asarray(exit_temperatures(dfile.design, run), np.float32)
    graph = DesignGraph(run.load_model(), dfile.design).eval()
    sess = _session(single_export["out"])
    x = load_samples(run, "test").x[:8]
    seen = set()
    for forced in ([-1.0, -1.0], [2.0, -1.0], [2.0, 2.0], [0.6, 0.8]):
        thr = np.asarray(forced, np.float32)
        for i in range(len(x)):
            z, idx = sess.run(
                None, {"input": x[i : i + 1], "thresholds": thr, "temperatures": temps}
            )
            with torch.no_grad():
                rz, ridx = graph(
                    torch.from_numpy(x[i : i + 1]), torch.from_numpy(thr), torch.from_numpy(temps)
                )
            assert int(idx[0]) == int(ridx[0])
            np.testing.assert_allclose(z, rz.numpy(), atol=CHECK_ATOL)
            seen.add(int(idx[0]))
    assert seen == {0, 1, 2}


def test_thresholds_default_and_override_without_reexport(single_export: dict) -> None:
    sess = _session(single_export["out"])
    x = np.zeros(
        (1, *json.loads((single_export["run"] / "model.json").read_text())["arch"]["input_shape"]),
        np.float32,
    )
    z_default, i_default = sess.run(None, {"input": x})
    z_fed, i_fed = sess.run(None, {"input": x, "thresholds": np.asarray([0.6, 0.8], np.float32)})
    assert int(i_default[0]) == int(i_fed[0])
    np.testing.assert_array_equal(z_default, z_fed)
    _, always = sess.run(None, {"input": x, "thresholds": np.asarray([-1, -1], np.float32)})
    _, never = sess.run(None, {"input": x, "thresholds": np.asarray([2, 2], np.float32)})
    assert (int(always[0]), int(never[0])) == (0, 2)


@pytest.fixture(scope="module")
def four_exit_export(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory, write_design):
    """A four-exit max-softmax design of the tiny run, exported once for this module."""
    from hapi_dse.deploy import ExportConfig, export_design

    root = tmp_path_factory.mktemp("four-exits")
    exits = [(0, "linear", 0.9), (2, "conv", 0.9), (4, "linear", 0.9), (6, "conv", 0.9)]
    write_design(tiny_run, root / "result" / "host" / "design.json", exits)
    out = root / "model.onnx"
    info = export_design(
        ExportConfig(source=root / "result", out=out, model=str(tiny_run), check_samples=64)
    )
    return {"out": out, "info": info, "run": tiny_run}


def test_readme_snippet_runs_on_a_four_exit_export_with_no_runtime_warning(
    four_exit_export: dict, tmp_path: Path
) -> None:
    """The README's onnxruntime snippet, run as written on stock onnxruntime (default session
    options) in a fresh process: nothing on stderr, the optional inputs listed, the searched
    thresholds used when omitted and overridden when fed."""
    import re

    from hapi_dse.deploy.inputs import load_samples
    from hapi_dse.run import RunDir

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Export: `hapi export`", 1)[1].split("\n## ", 1)[0]
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "ort." in b)
    x = load_samples(RunDir(four_exit_export["run"]), "test").x[:16]
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "model.onnx").symlink_to(four_exit_export["out"])  # the README's path
    script = f"""
import json
import numpy as np
xs = np.load("x.npy")
x = xs[:1]
{snippet}
out = {{"inputs": [[i.name, i.type, i.shape] for i in sess.get_inputs()], "m": m,
       "stricter": int(exit_index[0])}}
for key, feed in {{"omitted": {{}}, "none": {{"thresholds": None, "temperatures": None}},
                  "searched": {{"thresholds": np.full(m, 0.9, np.float32)}},
                  "never": {{"thresholds": np.full(m, 2.0, np.float32)}},
                  "always": {{"thresholds": np.full(m, -1.0, np.float32)}}}}.items():
    runs = [sess.run(None, {{"input": xs[i : i + 1], **feed}}) for i in range(len(xs))]
    out[key] = [int(r[1][0]) for r in runs]
print(json.dumps(out))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no "Initializer thresholds appears in graph inputs" warning
    got = json.loads(done.stdout)
    assert got["inputs"] == [
        ["input", "tensor(float)", [1, *x.shape[1:]]],
        ["thresholds", "optional(tensor(float))", [4]],
        ["temperatures", "optional(tensor(float))", [4]],
    ]
    assert got["m"] == 4 and 0 <= got["stricter"] <= 4
    assert got["omitted"] == got["none"] == got["searched"]  # the defaults: the searched 0.9
    assert got["never"] == [4] * len(x) and got["always"] == [0] * len(x)
    side = four_exit_export["info"]["inputs"]
    assert [(i["name"], i.get("optional", False)) for i in side] == [
        ("input", False),
        ("thresholds", True),
        ("temperatures", True),
    ]


def test_staged_export_runtime_matches_single_graph(
    single_export: dict, tmp_path: Path, run_cli
) -> None:
    out = tmp_path / "staged"
    res = run_cli(
        "export",
        single_export["design"],
        "--model",
        single_export["run"],
        "--format",
        "staged",
        "--out",
        out,
        "--check-samples",
        "64",
    )
    assert res.exit_code == 0, res.stderr
    side = json.loads((out / "export.json").read_text())
    assert side["check"]["passed"] and side["stages"] == [
        "stage_0.onnx",
        "stage_1.onnx",
        "stage_2.onnx",
    ]
    text = (out / "staged_runtime.py").read_text()
    assert "import torch" not in text and "hapi_dse" not in text

    from hapi_dse.deploy.inputs import load_samples
    from hapi_dse.deploy.load import load_runtime
    from hapi_dse.run import RunDir

    staged = load_runtime(out).StagedModel(out)
    sess = _session(single_export["out"])
    x = load_samples(RunDir(single_export["run"]), "test").x[:16]
    for i in range(len(x)):
        z, idx = staged.run(x[i : i + 1])
        rz, ridx = sess.run(None, {"input": x[i : i + 1]})
        assert idx == int(ridx[0])
        np.testing.assert_allclose(z, rz, atol=CHECK_ATOL)
    staged.set_thresholds([-1.0, -1.0])
    assert staged.run(x[:1])[1] == 0

    # raw pixels (digits: integers 0..16) are refused by run() and normalised by normalize()
    norm = staged.manifest["normalization"]
    raw = np.rint((x[:1] * norm["std"] + norm["mean"]) * 16).astype(np.uint8)
    with pytest.raises(ValueError, match="uint8.*normalize"):
        staged.run(raw)
    np.testing.assert_allclose(staged.normalize(raw, scale=16), x[:1], atol=1e-5)
    staged.set_thresholds(staged.manifest["thresholds"])
    np.save(tmp_path / "raw.npy", raw)
    np.save(tmp_path / "x.npy", x[:1])
    cli = [sys.executable, str(out / "staged_runtime.py")]
    done = subprocess.run([*cli, str(tmp_path / "raw.npy")], capture_output=True, text=True)
    assert done.returncode == 2 and "normalize" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([*cli, str(tmp_path / "x.npy")], capture_output=True, text=True)
    assert json.loads(done.stdout)["class"] == staged.predict(x[:1])[0]

    # hapi eval runs hapi's own runtime, never the code found in the directory
    marker = tmp_path / "ran"
    (out / "staged_runtime.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    res = run_cli("eval", out, "--model", single_export["run"], "--limit", "8", "--warmup", "1")
    assert res.exit_code == 0, res.stderr
    assert not marker.exists()
    # a broken manifest is one line and exit status 2
    (out / "manifest.json").write_text('{"policy": "max_softmax"}')
    res = run_cli("eval", out, "--model", single_export["run"], "--limit", "8")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "not a valid staged export" in res.stderr and not marker.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing-dir", "--out", "m.onnx"], "no such file or directory"),
        (["DESIGN", "--out", "m.txt"], "expected a file name ending in .onnx"),
        (["DESIGN", "--out", "m.onnx", "--format", "tflite"], "invalid value for '--format'"),
        (["BADEXIT", "--out", "m.onnx"], "does not exist in model"),
        (["OTHERMODEL", "--out", "m.onnx"], "pass --model"),
    ],
)
def test_export_errors_are_one_line_exit_2(
    run_cli, tiny_run: Path, tmp_path: Path, write_design, args: list[str], message: str
) -> None:
    good = write_design(tiny_run, tmp_path / "d.json", [(1, "linear", 0.5)])
    bad = write_design(tiny_run, tmp_path / "bad.json", [(99, "linear", 0.5)])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(good.read_text()), "model_id": "resnet20-0000"}))
    subst = {
        "DESIGN": good,
        "BADEXIT": bad,
        "OTHERMODEL": other,
        "missing-dir": tmp_path / "missing-dir",
    }
    argv = [str(subst.get(a, a)) for a in args]
    argv = [str(tmp_path / a) if a.startswith("m.") else a for a in argv]
    res = run_cli("export", *argv, "--model", tiny_run)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message.lower() in lines[0].lower(), res.stderr
    assert "Traceback" not in res.stderr
