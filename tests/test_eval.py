"""hapi eval: the export measured with onnxruntime beside the cost model's prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def exported(shared_export: dict) -> Path:
    out: Path = shared_export["out"]
    return out


def eval_args(
    exported: Path, tiny_run: Path, device: str, profiles: Path, out: Path
) -> list[object]:
    """``hapi eval`` of the shared export with ``device``'s table in ``profiles``, to ``out``."""
    return ["eval", exported, "--model", tiny_run, "--device", device, "--profiles", profiles,
            "--out", out]  # fmt: skip


def test_eval_json_fields_and_fidelity(
    run_cli, tiny_run: Path, exported: Path, tmp_path: Path, write_fake_table
) -> None:
    profiles = tmp_path / "profiles"
    write_fake_table(tiny_run, profiles, "fakehost")
    report = tmp_path / "eval.json"
    res = run_cli(*eval_args(exported, tiny_run, "fakehost", profiles, report), "--warmup", "2")
    assert res.exit_code == 0, res.stderr
    assert "accuracy (%)" in res.stdout and "latency p99 (ms)" in res.stdout
    rep = json.loads(report.read_text())
    meas, pred = rep["measured"], rep["predicted"]
    stats = {"mean", "p50", "p90", "p99", "max"}
    assert set(meas["latency_ms"]) == set(pred["latency_ms"]) == stats
    assert sum(meas["exit_histogram"]) == rep["n"] == sum(pred["exit_histogram"])
    assert len(meas["exit_histogram"]) == 3  # two exits + the final classifier
    assert all(meas["latency_ms"][k] > 0 for k in ("mean", "p50", "p90", "p99"))
    assert meas["latency_ms"]["p50"] <= meas["latency_ms"]["p90"] <= meas["latency_ms"]["p99"]
    assert set(rep["relative_error"]) == {
        "accuracy",
        "latency_mean",
        "latency_p50",
        "latency_p90",
        "latency_p99",
        "latency_max",
    }
    # the estimator: each sample takes its path's latency (measure.py)
    hist = np.array(meas["exit_histogram"])
    paths = np.array([0.0 if v is None else v for v in meas["path_latency_ms"]])
    assert meas["latency_ms"]["mean"] == pytest.approx(float(hist @ paths) / hist.sum())
    assert meas["latency_ms"]["max"] == pytest.approx(paths[hist > 0].max())
    rel = rep["relative_error"]["latency_mean"]
    assert rel == pytest.approx(meas["latency_ms"]["mean"] / pred["latency_ms"]["mean"] - 1)
    # the exported decisions are the cost model's
    assert rep["fidelity"]["exit_agreement"] >= 0.995
    assert abs(rep["accuracy_diff_pp"]) <= 0.1
    assert rep["table"]["device"] == "fakehost"
    # a table of another device than 'host': the report says the errors compare two machines
    assert "compare two machines" in rep["table"]["note"]
    assert rep["provenance"]["inputs"]["model"]["sha256"]


def test_eval_without_a_table_still_reports_accuracy(
    run_cli, tiny_run: Path, exported: Path, tmp_path: Path
) -> None:
    report = tmp_path / "e.json"
    args = eval_args(exported, tiny_run, "nosuchdevice", tmp_path, report)
    res = run_cli(*args, "--limit", "40", "--warmup", "0")
    assert res.exit_code == 0, res.stderr
    rep = json.loads(report.read_text())
    assert rep["n"] == 40
    assert rep["predicted"]["latency_ms"] is None and "error" in rep["table"]
    assert rep["fidelity"]["exit_agreement"] >= 0.995
    # no table: accuracy is the only figure predicted (zero placeholder costs made a
    # latency of 0 and a goodput of Infinity, which is not JSON), and the console says why
    assert set(rep["predicted"]["metrics"]) == {"accuracy"}
    json.loads(report.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the report"))
    assert "no latency prediction: " in res.stdout


def test_eval_errors_are_one_line_exit_2(run_cli, tmp_path: Path, tiny_run: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    plain = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [x],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
    )
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    for target, message in (
        (tmp_path / "plain.onnx", "not a hapi export"),
        (tmp_path / "junk.onnx", "onnxruntime cannot load it"),
        (tmp_path / "none.onnx", "no such file"),
        (tmp_path, "no manifest.json"),
    ):
        res = run_cli("eval", target, "--model", tiny_run)
        assert res.exit_code == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], res.stderr


def test_open_export_runs_one_sample(exported: Path) -> None:
    from hapi_dse.deploy import open_export

    exp = open_export(exported)
    shape = exp.meta["input_shape"]
    logits, idx = exp.runner(np.zeros(shape, np.float32))
    assert logits.shape == (1, len(exp.meta["classes"])) and idx in (0, 1, 2)


def test_slo_verdicts_compare_the_measured_figure_with_the_bound() -> None:
    from hapi_dse.cost.slo import parse_slos
    from hapi_dse.deploy.evaluate import broken_slos, slo_verdicts

    slos = [
        s.to_dict()
        for s in parse_slos(
            ["latency=0.2ms", "p99_latency=0.5ms", "accuracy=90%", "energy=5mJ", "max_latency=1ms"]
        )
    ]
    measured = {
        "accuracy": 0.905,
        "latency_ms": {"mean": 0.21, "p50": 0.2, "p90": 0.3, "p99": 0.45, "max": 0.6},
    }
    predicted = {
        "metrics": {
            "latency_ms": 0.19,
            "p99_latency_ms": 0.44,
            "accuracy": 0.905,
            "energy_mj": 4.0,
            "max_latency_ms": 0.6,
        }
    }
    got = {v["metric"]: v for v in slo_verdicts(slos, measured, predicted)}
    assert got["latency_ms"]["verdict"] == "broken"  # 0.21 > 0.2, though 0.19 was predicted
    assert got["latency_ms"]["measured"] == 0.21 and got["latency_ms"]["predicted"] == 0.19
    assert got["p99_latency_ms"]["verdict"] == "met"
    assert got["accuracy"]["verdict"] == "met" and got["accuracy"]["bound"] == "min"
    assert got["energy_mj"]["verdict"] == "not measured" and got["energy_mj"]["predicted"] == 4.0
    assert got["max_latency_ms"]["verdict"] == "met"
    rep = {"slos": slo_verdicts(slos, measured, predicted)}
    assert broken_slos(rep) == ["latency=0.2ms"]
    measured["accuracy"] = 0.89
    assert "accuracy=90%" in broken_slos({"slos": slo_verdicts(slos, measured, None)})


def _measure_with(monkeypatch: pytest.MonkeyPatch, load: float, cpu_s: float) -> object:
    """measure_exports on a fake runner and a fake clock (every call takes 1 ms), with the
    machine's load average and this process's CPU seconds over 10 wall seconds injected."""
    import types

    from hapi_dse import busy
    from hapi_dse.deploy import measure

    ns = iter(range(0, 10**12, 10**6))
    monkeypatch.setattr(measure, "time", types.SimpleNamespace(perf_counter_ns=lambda: next(ns)))
    monkeypatch.setattr(busy, "machine_load", lambda: (load, 2))
    readings = iter([(0.0, 0.0), (cpu_s, 10.0)])
    monkeypatch.setattr(busy, "clocks", lambda: next(readings))
    x = np.zeros((20, 1, 2, 2), np.float32)
    (out,) = measure.measure_exports(
        [lambda xi: (np.array([[0.0, 1.0]]), 1)], x, num_paths=[2], warmup=0, passes=1
    )
    return out


@pytest.mark.parametrize(
    "load, cpu_s, because",
    [
        (0.5, 9.9, []),
        (5.0, 9.9, ["load"]),
        (1.0, 4.0, ["cpu_share"]),
        (5.0, 4.0, ["load", "cpu_share"]),
    ],
)
def test_a_busy_machine_is_flagged_and_the_figures_left_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, load, cpu_s, because
) -> None:
    caplog.set_level("WARNING")
    got = _measure_with(monkeypatch, load, cpu_s)
    assert got.busy == bool(because) and got.load["busy_because"] == because
    assert got.load["load_after"] == load and got.load["cpu_share"] == pytest.approx(cpu_s / 10)
    warned = [r for r in caplog.records if "busy" in r.getMessage()]
    assert len(warned) == (1 if because else 0)
    assert got.latency_ms == {"mean": 1.0, "p50": 1.0, "p90": 1.0, "p99": 1.0, "max": 1.0}
    assert got.path_ms == [None, 1.0] and got.raw_mean_ms == 1.0  # not corrected


def test_eval_on_a_busy_machine_warns_once_and_records_it(
    run_cli, monkeypatch: pytest.MonkeyPatch, tiny_run: Path, exported: Path, tmp_path: Path
) -> None:
    """Under an injected load reading (4.5 on 2 cores), hapi eval says so in one stderr line
    and in its report; a quiet reading leaves both silent."""
    from hapi_dse import busy as readings

    report = tmp_path / "eval.json"
    args = ["eval", exported, "--model", tiny_run, "--limit", "16", "--warmup", "1"]
    for load, busy in ((4.5, True), (0.0, False)):
        monkeypatch.setattr(readings, "machine_load", lambda load=load: (load, 2))
        monkeypatch.setattr(readings, "BUSY_CPU_SHARE", 0.0)  # this test's own CPU share aside
        res = run_cli(*args, "--out", report)
        assert res.exit_code == 0, res.stderr
        rep = json.loads(report.read_text())
        assert rep["machine_busy"] is busy and rep["measured"]["load"]["busy"] is busy
        busy_lines = [ln for ln in res.stderr.splitlines() if "busy" in ln]
        assert len(busy_lines) == (1 if busy else 0), res.stderr
        if busy:
            assert "4.5" in busy_lines[0] and "on 2 cores" in busy_lines[0]
            assert rep["measured"]["load"]["load_before"] == 4.5
            assert rep["measured"]["load"]["cpu_share"] > 0
