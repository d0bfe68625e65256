"""Reference networks (hapi_dse.profiling.reference_nets) and the published latencies
(hapi_dse.profiling.published) the device specs are checked against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hapi_dse.errors import ArtefactError, HapiError
from hapi_dse.paths import SHIPPED_PROFILES, SPECS_SUBDIR
from hapi_dse.profiling.published import load_published
from hapi_dse.profiling.reference_nets import REFERENCE_NETS, build

onnx = pytest.importorskip("onnx")

#: published multiply-accumulates of each network (Conv + Gemm, batch 1, 224x224):
#: torchvision's model tables ("GFLOPS", which count MACs) and the papers' figures
PUBLISHED_MACS = {
    "resnet18": 1.81e9,  # torchvision ResNet18_Weights
    "resnet34": 3.66e9,  # torchvision ResNet34_Weights
    "resnet50": 4.09e9,  # torchvision ResNet50_Weights (v1.5)
    "resnet50_v1": 3.8e9,  # He et al. 2015, Table 1
    "mobilenet_v1": 569e6,  # Howard et al. 2017, Table 8
    "mobilenet_v2": 300e6,  # Sandler et al. 2018, Table 4
}
#: the device names the shipped GPU figures use before its spec exists
PLANNED_SPECS = {"jetson-nano-gpu"}


def conv_gemm_macs(model: Any) -> int:
    """Multiply-accumulates of every Conv and Gemm, from the shape-inferred graph."""
    g = onnx.shape_inference.infer_shapes(model).graph
    dims = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in (*g.input, *g.output, *g.value_info)
    }
    weights = {t.name: list(t.dims) for t in g.initializer}
    total = 0
    for node in g.node:
        w = weights.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type == "Conv":
            assert w is not None
            out = dims[node.output[0]]
            total += int(np.prod(out)) * int(np.prod(w[1:]))  # (Cin/group)*kh*kw per output
        elif node.op_type == "Gemm":
            assert w is not None
            total += int(np.prod(dims[node.output[0]])) * w[1]  # transB: w is (N, K)
    return total


@pytest.fixture(scope="module", params=sorted(REFERENCE_NETS))
def net(request: pytest.FixtureRequest) -> tuple[str, Any]:
    return request.param, build(request.param)


def test_every_net_has_a_published_mac_count() -> None:
    assert set(REFERENCE_NETS) == set(PUBLISHED_MACS)


def test_valid_onnx_with_static_shapes(net: tuple[str, Any]) -> None:
    from hapi_dse.onnx_tools import DEFAULT_OPSET

    name, model = net
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import] == [DEFAULT_OPSET]
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    for vi in (*inferred.input, *inferred.output, *inferred.value_info):
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        assert shape and all(d > 0 for d in shape), (name, vi.name, shape)
    assert [d.dim_value for d in inferred.input[0].type.tensor_type.shape.dim] == [1, 3, 224, 224]
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops  # folded into the convolutions, as exported
    assert {"Conv", "GlobalAveragePool", "Flatten", "Gemm"} <= ops
    assert ("Clip" if name.startswith("mobilenet") else "MaxPool") in ops


def test_macs_match_published_figures(net: tuple[str, Any]) -> None:
    name, model = net
    macs = conv_gemm_macs(model)
    assert macs == pytest.approx(PUBLISHED_MACS[name], rel=0.02), f"{name}: {macs / 1e6:.1f} M"


def test_onnxruntime_runs_each_net(net: tuple[str, Any]) -> None:
    ort = pytest.importorskip("onnxruntime")
    name, model = net
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    (y,) = sess.run(None, {"input": x})
    assert y.shape == (1, 1000)
    assert np.isfinite(y).all() and np.abs(y).max() > 0, name


def test_build_is_deterministic_per_seed_and_sized_by_input() -> None:
    a, b, c = build("mobilenet_v2", seed=3), build("mobilenet_v2", seed=3), build("mobilenet_v2")
    assert a.SerializeToString() == b.SerializeToString() != c.SerializeToString()
    small = build("resnet18", input_size=160)
    onnx.checker.check_model(small)
    assert conv_gemm_macs(small) < conv_gemm_macs(build("resnet18"))


def test_unknown_name_is_a_one_line_error() -> None:
    with pytest.raises(HapiError, match=r"unknown reference network 'resnet19'.*'resnet18'"):
        build("resnet19")


def test_no_torch_or_optuna_import() -> None:
    import subprocess
    import sys

    code = (
        "import sys, hapi_dse.profiling.reference_nets, hapi_dse.profiling.published\n"
        "print(sorted(m for m in ('torch', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- published figures -------------------------------------------------------------------------


def test_shipped_published_figures_name_known_nets_and_devices() -> None:
    checks = load_published()
    specs = {p.stem for p in (SHIPPED_PROFILES / SPECS_SUBDIR).glob("*.toml")}
    assert "published" not in specs  # not read as a device spec
    devices = {c.device for c in checks}
    assert devices <= specs | PLANNED_SPECS, devices - specs - PLANNED_SPECS
    assert {"raspberry-pi-4", "pixel6", "jetson-nano", "jetson-nano-gpu"} <= devices
    for c in checks:
        assert c.model in REFERENCE_NETS, c
        assert c.url.startswith("https://"), c
        assert c.batch == 1 and c.input == 224, c
    for device in devices:
        assert sum(c.device == device for c in checks) >= 2, device


BAD_ENTRIES = [
    ("measured_ms = -1.0", "measured_ms = -1.0, expected a finite number > 0"),
    ('measured_ms = "12"', "measured_ms = '12', expected a finite number > 0"),
    ("threads = 1.5", "threads = 1.5, expected an integer >= 0"),
    ("batch = 0", "batch = 0, expected an integer >= 1"),
    ('precision = "fp64"', "precision = 'fp64', expected one of fp32, fp16, int8"),
    ('device = ""', "device = '', expected a non-empty string"),
    ('colour = "red"', "unknown key(s) colour"),
]
GOOD = {
    "device": '"raspberry-pi-4"',
    "model": '"resnet18"',
    "input": "224",
    "runtime": '"ncnn"',
    "threads": "1",
    "precision": '"fp32"',
    "batch": "1",
    "measured_ms": "226.5",
    "source": '"a page"',
    "url": '"https://example.org"',
    "note": '""',
}


def _write(tmp_path: Path, override: str = "", drop: str = "") -> Path:
    key = override.split(" = ")[0] if override else ""
    lines = [f"{k} = {v}" for k, v in GOOD.items() if k not in (key, drop)]
    p = tmp_path / "published.toml"
    p.write_text("[[check]]\n" + "\n".join([*lines, override]) + "\n")
    return p


def test_loader_reads_a_good_file(tmp_path: Path) -> None:
    (c,) = load_published(_write(tmp_path))
    assert (c.device, c.model, c.threads, c.measured_ms, c.proxy) == (
        "raspberry-pi-4",
        "resnet18",
        1,
        226.5,
        False,
    )


@pytest.mark.parametrize(("line", "message"), BAD_ENTRIES)
def test_loader_refuses_bad_values(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ArtefactError) as e:
        load_published(_write(tmp_path, line))
    assert message in str(e.value) and "check #1" in str(e.value)
    assert "\n" not in str(e.value)


def test_loader_refuses_missing_keys_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ArtefactError, match="missing key"):
        load_published(_write(tmp_path, drop="measured_ms"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[[check]\n")
    with pytest.raises(ArtefactError, match="not valid TOML"):
        load_published(bad)
    bad.write_text("title = 'x'\n")
    with pytest.raises(ArtefactError, match="unknown top-level"):
        load_published(bad)
    with pytest.raises(ArtefactError, match="cannot read"):
        load_published(tmp_path / "absent.toml")
