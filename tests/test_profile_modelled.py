"""Modelled profiles, specs and energy meters (no timing, no torch)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from hapi_dse.errors import ArtefactError, UsageError
from hapi_dse.profiling.energy import CommandMeter, RaplMeter, detect_meter
from hapi_dse.profiling.modelled import NodeCost, estimate_s, graph_costs
from hapi_dse.profiling.specs import REQUIRED, DeviceSpec, find_spec, parse_spec, spec_paths

onnx = pytest.importorskip("onnx")
SHIPPED = ("pixel6", "raspberry-pi-4", "jetson-nano", "jetson-nano-gpu")


def conv_graph(path: Path, k: int, c: int = 16, h: int = 8, group: int = 1) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((c, c // group, k, k), np.float32), "w")
    node = helper.make_node(
        "Conv", ["x", "w"], ["c"], kernel_shape=[k, k], pads=[k // 2] * 4, group=group
    )
    relu = helper.make_node("Relu", ["c"], ["y"])
    g = helper.make_graph(
        [node, relu],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, h])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, h, h])],
        initializer=[w],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_shipped_specs_parse_and_cite_sources():
    paths = spec_paths()
    for name in SHIPPED:
        spec = find_spec(name)
        assert spec.name == name and spec.flops_per_s > 0 and spec.active_power_w > 0
        lines = paths[name].read_text().splitlines()
        # every figure the model uses carries its reason on its own line, and the header
        # cites at least one public source
        for key in REQUIRED:
            line = next(x for x in lines if x.startswith(f"{key} ="))
            value, _, why = line.partition("#")
            assert float(value.split("=")[1]) == getattr(spec, key) and len(why.strip()) > 5
        assert any(x.startswith("#") and "Source:" in x for x in lines)
        assert sum(x.startswith("#") for x in lines) >= 10


@pytest.mark.parametrize("device", SHIPPED)
def test_modelled_latency_is_monotone_in_flops_for_equal_shapes(tmp_path, device):
    spec = find_spec(device)
    # Same input and output shapes, growing FLOPs: depthwise 3x3 < 1x1 < 3x3 < 5x5.
    graphs = [
        conv_graph(tmp_path / "dw.onnx", 3, group=16),
        conv_graph(tmp_path / "a.onnx", 1),
        conv_graph(tmp_path / "b.onnx", 3),
        conv_graph(tmp_path / "c.onnx", 5),
    ]
    costs = [graph_costs(p) for p in graphs]
    flops = [sum(c.flops for c in cs) for cs in costs]
    assert flops == sorted(flops) and len(set(flops)) == 4
    lat = [estimate_s(cs, spec) for cs in costs[1:]]
    assert lat == sorted(lat) and lat[0] < lat[-1]
    # and on synthetic nodes: scaling FLOPs never lowers the estimate
    base = [NodeCost("Conv", "conv", 10**6, 10**4), NodeCost("Gemm", "gemm", 10**4, 10**4)]
    prev = 0.0
    for scale in (1, 2, 4, 8, 64):
        t = estimate_s([NodeCost(c.op, c.cls, c.flops * scale, c.bytes) for c in base], spec)
        assert t >= prev
        prev = t


def test_graph_costs_fuse_activations_and_count_conv_flops(tmp_path):
    costs = graph_costs(conv_graph(tmp_path / "g.onnx", 3, c=8, h=4))
    assert [(c.op, c.cls) for c in costs] == [("Conv", "conv"), ("Relu", "elementwise")]
    assert costs[0].flops == 2 * 8 * 4 * 4 * 8 * 9 and not costs[0].fused
    assert costs[1].fused and costs[1].flops == 0


def test_bad_spec_names_the_file_and_key(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text(
        "flops_per_s = 1e9\nmem_bandwidth_bytes_per_s = -1\nop_overhead_us = 1\n"
        "call_overhead_us = 1\nactive_power_w = 1\n"
    )
    with pytest.raises(ArtefactError, match=r"x.toml: mem_bandwidth_bytes_per_s"):
        parse_spec(p)
    p.write_text("flops_per_s = [")
    with pytest.raises(ArtefactError, match="not valid TOML"):
        parse_spec(p)
    with pytest.raises(UsageError, match="did you mean 'pixel6'"):
        find_spec("pixel7")


def test_spec_round_trips_through_toml(tmp_path):
    spec = DeviceSpec(
        "dev",
        1e9,
        2e9,
        1.5,
        3.0,
        2.5,
        description='a "b"',
        threads=4,
        efficiency={"gemm": 0.5, "conv": 0.7},
        parallel_efficiency={"conv": 0.9},
        output_ns={"pool": 0.3},
        mem_bandwidth_total_bytes_per_s=3e9,
        thread_overhead_us=4.0,
        channel_block=8,
        calibration={"graphs": 12, "fit_mape": 0.05, "residuals": {"a@1": 0.01}},
    )
    p = tmp_path / "dev.toml"
    p.write_text(spec.to_toml("header\nline"))
    back = parse_spec(p)
    assert back.to_dict() | {"path": None} == spec.to_dict()


def test_command_meter_reads_joules_and_rejects_garbage(tmp_path):
    counter = tmp_path / "j"
    counter.write_text("10.5")
    script = f"import pathlib; p = pathlib.Path({str(counter)!r}); print('E', p.read_text())"
    meter = detect_meter(f'{sys.executable} -c "{script}"')
    assert isinstance(meter, CommandMeter) and meter.read_j() == 10.5
    with pytest.raises(UsageError, match="expected a number of joules"):
        CommandMeter(f"{sys.executable} -c \"print('watts?')\"")
    with pytest.raises(UsageError, match="exited with status 3"):
        CommandMeter(f'{sys.executable} -c "import sys; sys.exit(3)"')


def test_rapl_meter_sums_packages_and_handles_wrap(tmp_path):
    for i, (e, rng) in enumerate([(1_000_000, 5_000_000), (2_000_000, 5_000_000)]):
        d = tmp_path / f"intel-rapl:{i}"
        d.mkdir()
        (d / "energy_uj").write_text(str(e))
        (d / "max_energy_range_uj").write_text(str(rng))
    sub = tmp_path / "intel-rapl:0:0"  # a sub-domain: not counted twice
    sub.mkdir()
    (sub / "energy_uj").write_text("999999999")
    meter = RaplMeter(tmp_path)
    assert meter.read_j() == pytest.approx(3.0)
    assert meter.delta_j(4.9, 0.1) == pytest.approx(0.2)
    assert detect_meter(None, powercap=tmp_path / "none", try_nvml=False) is None


def test_legacy_spec_keys_become_classes(tmp_path):
    p = tmp_path / "old.toml"
    p.write_text(
        "flops_per_s = 1e10\nmem_bandwidth_bytes_per_s = 1e9\nop_overhead_us = 1\n"
        "call_overhead_us = 1\nactive_power_w = 1\n[op_flops_per_s]\nGemm = 2.5e9\n"
        "DepthwiseConv = 1e9\n[op_overhead_us_by_type]\nReshape = 0.2\n"
    )
    spec = parse_spec(p)
    assert spec.rate("gemm") == pytest.approx(2.5e9)
    assert spec.rate("depthwise") == pytest.approx(1e9)
    assert spec.rate("conv") == pytest.approx(1e10)
    assert spec.overhead_s("shape") == pytest.approx(0.2e-6)
    p.write_text(p.read_text() + "[efficiency]\nwarp = 0.5\n")
    with pytest.raises(ArtefactError, match="'warp' is not an operator class"):
        parse_spec(p)
