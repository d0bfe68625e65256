"""The device model: per-operator cost formulas, threads, the blocked layout, the fit, and
the commands built on them (``hapi estimate``, ``hapi calibrate``)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hapi_dse.profiling.fitting import Timing, fit_spec
from hapi_dse.profiling.kit import _Builder, calibration_kit, micro_graphs, random_cnns
from hapi_dse.profiling.modelled import class_breakdown, estimate_s
from hapi_dse.profiling.opcost import graph_costs
from hapi_dse.profiling.specs import DeviceSpec, find_spec, parse_spec

onnx = pytest.importorskip("onnx")


def graph(shape: list[int], build) -> object:
    b = _Builder(np.random.default_rng(0))
    return b.model("g", shape, build(b, "x"))


def save(model: object, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


SPEC = DeviceSpec(
    "dev",
    flops_per_s=1e10,
    mem_bandwidth_bytes_per_s=1e10,
    op_overhead_us=2.0,
    call_overhead_us=5.0,
    active_power_w=2.0,
    threads=4,
    efficiency={"conv": 0.5, "pool": 0.1},
    parallel_efficiency={"conv": 1.0, "pool": 0.0},
    mem_bandwidth_total_bytes_per_s=2e10,
    thread_overhead_us=1.0,
)


def test_a_kxk_pool_reads_k_squared_inputs_per_output():
    costs = graph_costs(graph([1, 16, 8, 8], lambda b, x: b.pool(x, "AveragePool", k=3)))
    (pool,) = [c for c in costs if c.op == "AveragePool"]
    assert pool.cls == "pool" and pool.flops == 16 * 8 * 8 * 9
    costs = graph_costs(graph([1, 16, 8, 8], lambda b, x: b.pool(x, "MaxPool", k=5)))
    assert [c.flops for c in costs if c.op == "MaxPool"] == [16 * 8 * 8 * 25]


@pytest.mark.parametrize(
    ("k", "group", "cls", "macs"),
    [(1, 1, "conv1x1", 32), (3, 1, "conv", 32 * 9), (3, 32, "depthwise", 9), (3, 4, "conv", 8 * 9)],
)
def test_convolutions_are_classed_and_counted_by_kernel_and_groups(k, group, cls, macs):
    costs = graph_costs(graph([1, 32, 6, 6], lambda b, x: b.conv(x, 32, 32, k, group=group)))
    conv = costs[0]  # macs: multiply-accumulates per output element
    assert conv.cls == cls and conv.flops == 2 * macs * 32 * 6 * 6
    assert costs[1].fused  # the Relu


def test_an_operator_without_a_formula_is_warned_about_never_free(caplog):
    model = graph([1, 4, 4, 4], lambda b, x: b.op("Celu", [x]))
    with caplog.at_level(logging.WARNING, logger="hapi_dse.profiling.opcost"):
        costs = graph_costs(model)
    assert costs.unknown_ops == ["Celu"] and "Celu" in caplog.text
    assert costs[0].cls == "other" and costs[0].flops == 64 and costs[0].bytes > 0
    assert estimate_s(costs, SPEC, 1) > estimate_s(
        graph_costs(graph([1, 4, 4, 4], lambda b, x: x)), SPEC, 1
    )


def test_threads_split_compute_share_bandwidth_and_fall_back_to_one_core():
    big = graph_costs(graph([1, 64, 32, 32], lambda b, x: b.conv(x, 64, 64, 3)))
    one, four = estimate_s(big, SPEC, 1), estimate_s(big, SPEC, 4)
    call = SPEC.call_overhead_us * 1e-6
    # conv has parallel efficiency 1: its compute splits four ways (plus the fork/join)
    assert (four - call) < (one - call) / 3
    # a pool that does not split (parallel efficiency 0) never gets slower than one core
    pool = graph_costs(graph([1, 64, 32, 32], lambda b, x: b.pool(x, "MaxPool")))
    assert estimate_s(pool, SPEC, 4) == pytest.approx(estimate_s(pool, SPEC, 1))
    # a memory-bound node gains no more than the total bandwidth allows
    add = graph_costs(graph([1, 64, 64, 64], lambda b, x: b.op("Add", [x, x])))
    free = replace(SPEC, efficiency={"elementwise": 1.0}, parallel_efficiency={"elementwise": 1.0})
    t1, t4 = (estimate_s(add, free, n) - call for n in (1, 4))
    assert t4 >= (t1 - free.overhead_s("elementwise")) / 2 * 0.99  # 2x: total / one core
    # the breakdown sums to the estimate
    assert sum(class_breakdown(big, SPEC).values()) == pytest.approx(estimate_s(big, SPEC))


def test_the_blocked_layout_pads_channels_and_reorders_between_layouts():
    def cell(b, x):  # 8-channel conv feeding a pool (plain) then a 16-channel conv
        y = b.conv(x, 3, 8, 3)
        return b.conv(b.pool(y, "MaxPool"), 8, 16, 3)

    model = graph([1, 3, 8, 8], cell)
    plain, blocked = graph_costs(model, 1), graph_costs(model, 16)
    assert [c.op for c in plain if c.op.startswith("Reorder")] == []
    # back to plain for the 8-channel pool, and for the graph's output
    assert [c.op for c in blocked if c.op.startswith("Reorder")] == ["ReorderOutput"] * 2
    first = next(c for c in blocked if c.op == "Conv")
    assert first.flops == 2 * next(c for c in plain if c.op == "Conv").flops  # 8 -> 16 channels


def test_the_fit_recovers_a_known_spec_from_exact_latencies():
    truth = replace(
        SPEC,
        threads=2,
        efficiency={"conv": 0.3, "conv1x1": 0.15, "depthwise": 0.03, "pool": 0.05},
        output_ns={"conv": 0.2, "pool": 0.4},
        class_overhead_us={"conv": 3.0, "elementwise": 1.0},
    )
    timings = []
    for b in micro_graphs()[1:40] + random_cnns(6, seed=5):
        c = graph_costs(b.model)
        timings += [Timing(b.name, c, n, estimate_s(c, truth, n)) for n in (1, 2)]
    start = replace(SPEC, threads=2, call_overhead_us=truth.call_overhead_us)
    fit = fit_spec(timings, start, prior_weight=1e-4, fixed=("call",))
    assert fit.mape < 0.03
    check = [graph_costs(b.model) for b in random_cnns(5, seed=9)]
    for c in check:
        assert estimate_s(c, fit.spec, 1) == pytest.approx(estimate_s(c, truth, 1), rel=0.08)


def test_shipped_specs_model_all_cores_and_the_gpu_is_labelled():
    for name in ("raspberry-pi-4", "jetson-nano"):
        assert find_spec(name).threads == 4
    gpu = find_spec("jetson-nano-gpu")
    assert "modelled" in gpu.description.lower() and "FP16" in gpu.description


# --- the commands -------------------------------------------------------------------------


@pytest.fixture
def kit(tmp_path, run_cli):
    res = run_cli("calibrate", "--export-kit", tmp_path / "kit")
    assert res.exit_code == 0, res.stderr
    return tmp_path / "kit"


def test_estimate_prints_one_row_per_graph_and_json(kit, run_cli):
    files = sorted(kit.glob("*.onnx"))[:3]
    res = run_cli("estimate", "--device", "raspberry-pi-4", *files)
    assert res.exit_code == 0, res.stderr
    rows = [ln for ln in res.stdout.splitlines() if ln.endswith(".onnx") or ".onnx " in ln]
    assert len(rows) == 3 and "not calibrated" in res.stdout
    res = run_cli("estimate", "--device", "raspberry-pi-4", "--json", "--breakdown", *files)
    doc = json.loads(res.stdout)
    spec = find_spec("raspberry-pi-4")
    for g in doc["graphs"]:
        want = estimate_s(graph_costs(g["file"], spec.channel_block), spec) * 1e3
        assert g["latency_ms"] == pytest.approx(want)
        assert sum(g["share"].values()) == pytest.approx(1.0)
    assert doc["threads"] == 4 and doc["source"] == "modelled"
    one = json.loads(run_cli("estimate", "--device", "raspberry-pi-4", "--threads", "1",
                             "--json", files[0]).stdout)  # fmt: skip
    assert one["graphs"][0]["latency_ms"] > doc["graphs"][0]["latency_ms"] * 0.99


def test_calibrate_measure_then_fit_writes_a_calibrated_spec(kit, tmp_path, run_cli):
    assert len(list(kit.glob("*.onnx"))) == len(calibration_kit())
    res = run_cli("calibrate", "--measure", kit, "--runs", "10", "--warmup", "1")
    assert res.exit_code == 0, res.stderr
    rows = (kit / "measured.csv").read_text().splitlines()
    assert rows[0].startswith("model,latency_ms") and len(rows) == len(calibration_kit()) + 1
    prof = tmp_path / "prof"
    start = tmp_path / "start.toml"  # a datasheet-like start this machine can reach
    start.write_text(replace(SPEC, name="box", flops_per_s=1e12, threads=1).to_toml())
    res = run_cli("calibrate", "--fit", kit / "measured.csv", "--device", "box", "--spec",
                  start, "--profiles", prof)  # fmt: skip
    assert res.exit_code == 0, res.stderr
    spec = parse_spec(prof / "specs" / "box.toml")
    assert spec.calibrated and spec.calibration["graphs"] == len(calibration_kit()) - 1
    assert math.isfinite(spec.calibration["fit_mape"])
    assert len(spec.calibration["residuals"]) == len(calibration_kit()) - 1
    listing = run_cli("devices", "--profiles", prof).stdout
    assert any(ln.startswith("box ") and "calibrated(fit=" in ln for ln in listing.splitlines())
    res = run_cli("estimate", "--device", "box", "--profiles", prof, kit / "noop.onnx")
    assert "calibrated, fit error" in res.stdout


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("missing.onnx,1.0", "model 'missing.onnx' not found"),
        ("noop.onnx,-1", "latency_ms = -1.0, expected a finite number > 0"),
        ("noop.onnx,nan", "latency_ms = nan, expected a finite number > 0"),
        ("noop.onnx,fast", "latency_ms 'fast' is not a number"),
        ("junk.onnx,1.0", "not an ONNX graph hapi can read"),
    ],
)
def test_calibrate_fit_refuses_a_bad_csv_in_one_line(kit, run_cli, row, message):
    (kit / "junk.onnx").write_bytes(b"\x08\x01garbage")
    csv = kit / "bad.csv"
    csv.write_text(f"model,latency_ms\nconv3x3_c32_h16.onnx,0.02\n{row}\n")
    res = run_cli("calibrate", "--fit", csv, "--device", "pixel6", "--profiles", kit / "p")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    assert not (kit / "p").exists()


def test_estimate_and_measure_refuse_a_file_that_is_not_a_graph(tmp_path, run_cli):
    bad = tmp_path / "x.onnx"
    bad.write_text("not a graph")
    res = run_cli("estimate", "--device", "pixel6", bad)
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "not an ONNX graph" in res.stderr
    res = run_cli("calibrate", "--measure", tmp_path)
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "not an ONNX graph" in res.stderr
    assert not (tmp_path / "measured.csv").exists()
    res = run_cli("estimate", "--device", "pixel7", bad)
    assert res.exit_code == 2 and "did you mean 'pixel6'" in res.stderr


def test_control_flow_is_costed_on_its_costliest_branch():
    from onnx import TensorProto, helper, numpy_helper

    def branch(name: str, node: object, out: str) -> object:
        vi = helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 64])
        return helper.make_graph([node], name, [], [vi])

    heavy = branch("then", helper.make_node("MatMul", ["x", "w"], ["t"]), "t")
    light = branch("else", helper.make_node("Identity", ["x"], ["e"]), "e")
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        helper.make_node("Greater", ["m", "z"], ["c"]),
        helper.make_node("If", ["c"], ["y"], then_branch=heavy, else_branch=light),
    ]
    inits = [
        numpy_helper.from_array(np.zeros((64, 64), np.float32), "w"),
        numpy_helper.from_array(np.array(0, np.float32), "z"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        initializer=inits,
    )
    costs = graph_costs(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))
    assert [c.op for c in costs] == ["ReduceMax", "Greater", "If", "MatMul"]
    assert costs[3].flops == 2 * 64 * 64 and not costs.unknown_ops
