"""``hapi search --verify K`` on the tiny run: export, measure, re-pick (few runs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from hapi_dse.testing import search_args

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def host_profiles(
    tiny_run: Path, tmp_path_factory: pytest.TempPathFactory, profile_host: Any
) -> Path:
    """A host table of the tiny run measured on this machine (deployment terms included)."""
    return profile_host(tiny_run, tmp_path_factory.mktemp("profiles"))


def test_verify_measures_the_designs_near_the_pick(run_cli, tiny_run, host_profiles, tmp_path):
    out = tmp_path / "s"
    args = search_args(tiny_run, host_profiles, out, "--slo", "latency=1s", "--verify", "2",
                       device="host", trials=80, seed=1)  # fmt: skip
    res = run_cli(*args)
    assert res.exit_code == 0, res.stderr
    assert "verified 2 Pareto designs" in res.stdout
    info = json.loads((out / "host" / "search.json").read_text())["verify"]
    verified = info["verified_trials"]
    assert len(verified) == 2 and info["predicted_pick"] in verified  # the pick comes first
    assert info["split"] == "val" and set(info["load"]) >= {"load_before", "cores", "busy"}
    rows = list(csv.DictReader((out / "host" / "pareto.csv").open()))
    filled = [int(r["trial"]) for r in rows if r["measured_latency_ms"]]
    assert sorted(filled) == sorted(verified)
    for r in rows:
        if r["measured_latency_ms"]:
            assert float(r["measured_latency_ms"]) > 0 and float(r["measured_p99_latency_ms"]) > 0
            # the exported decisions are the searched ones: accuracy as predicted on val
            assert float(r["measured_accuracy"]) == pytest.approx(float(r["accuracy"]), abs=2e-3)
    design = json.loads((out / "host" / "design.json").read_text())
    assert design["trial"] == info["chosen_trial"] and design["measured_val"]["latency_ms"] > 0
    for n in verified:
        assert (out / "host" / "verify" / f"trial_{n}.onnx").is_file()
        rep = json.loads((out / "host" / "verify" / f"trial_{n}.eval.json").read_text())
        assert rep["split"] == "val" and rep["slos"][0]["verdict"] == "met"
    assert not list(out.glob(".hapi-verify-*"))  # the scratch directory was moved in


def _result(slo_ms: float, points=((0.95, 0.19), (0.93, 0.15), (0.90, 0.10))):
    from hapi_dse.cost import Design, parse_objectives, parse_slos
    from hapi_dse.cost.design import Exit
    from hapi_dse.search.records import DeviceResult, TrialRecord

    front = []
    for i, (acc, lat) in enumerate(points):
        r = TrialRecord(number=i, state="COMPLETE", feasible=True, pareto=True)
        r.design = Design((Exit(i, "linear", 0.5 + 0.1 * i),))
        r.metrics = {
            "accuracy": acc,
            "latency_ms": lat,
            "p90_latency_ms": lat,
            "p99_latency_ms": lat,
            "max_latency_ms": lat,
        }
        front.append(r)
    objectives = parse_objectives("accuracy,latency")
    return DeviceResult(
        device="host", model_id="m", records=front, front=front, chosen=front[0], closest=[],
        objectives=objectives, slos=parse_slos([f"latency={slo_ms}ms"]), pick_rule="accuracy",
        study_name="s", storage=None, sampler="nsga2", population=None, new_trials=len(front),
        table_source="measured", inputs={}, space_name="default", space_size=len(front),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("measured", "chosen"),
    [((0.18, 0.14, 0.09), 0), ((0.25, 0.14, 0.09), 1), ((0.25, 0.21, 0.3), None)],
)
def test_verify_picks_again_as_measured(monkeypatch, tmp_path, measured, chosen):
    """The pick (trial 0) measured over the SLO: the best verified design that meets it."""
    import hapi_dse.deploy.evaluate as evaluate
    import hapi_dse.deploy.export as export
    from hapi_dse.search.verify import verify

    monkeypatch.setattr(export, "export_design", lambda cfg, *, code: cfg.out.write_bytes(b"x"))
    by_trial = dict(enumerate(measured))

    def fake_eval(paths, cfg, **_):
        out = []
        for p in paths:
            ms = by_trial[int(p.stem.split("_")[1])]
            lat = {"mean": ms, "p50": ms, "p90": ms, "p99": ms, "max": ms}
            out.append(
                {"measured": {"accuracy": 0.9, "latency_ms": lat, "load": {}, "protocol": "fake"}}
            )
        return out

    monkeypatch.setattr(evaluate, "evaluate_exports", fake_eval)
    result = _result(0.2)
    cfg = type("Cfg", (), {"verify": 3, "seed": 0, "profiles": None})()
    run = type("Run", (), {"path": tmp_path})()
    verify(result, run, cfg, tmp_path)
    assert result.verify["verified_trials"] == [0, 1, 2]
    assert (result.chosen.number if result.chosen else None) == chosen
    assert result.verify["repicked"] == (chosen != 0)
    assert result.front[0].measured["latency_ms"] == measured[0]
    assert bool(result.front[0].measured_broken) == (measured[0] > 0.2)
    if chosen is None:
        assert "no verified design" in result.verify["note"]
    assert (result.verify_dir / "trial_0.eval.json").is_file()


def test_verify_tries_designs_with_more_slack_when_none_meets(monkeypatch, tmp_path):
    """Every design measures 20 % over its prediction: the two nearest the pick break the
    SLO, so the next round verifies the best designs that meet it with that margin."""
    import hapi_dse.deploy.evaluate as evaluate
    import hapi_dse.deploy.export as export
    from hapi_dse.search.verify import verify

    points = ((0.95, 0.19), (0.94, 0.185), (0.93, 0.15), (0.92, 0.14), (0.90, 0.10))
    monkeypatch.setattr(export, "export_design", lambda cfg, *, code: cfg.out.write_bytes(b"x"))

    def fake_eval(paths, cfg, **_):
        out = []
        for p in paths:
            ms = 1.2 * points[int(p.stem.split("_")[1])][1]
            lat = {"mean": ms, "p50": ms, "p90": ms, "p99": ms, "max": ms}
            out.append(
                {"measured": {"accuracy": 0.9, "latency_ms": lat, "load": {}, "protocol": "fake"}}
            )
        return out

    monkeypatch.setattr(evaluate, "evaluate_exports", fake_eval)
    result = _result(0.2, points)
    cfg = type("Cfg", (), {"verify": 2, "seed": 0, "profiles": None})()
    verify(result, type("Run", (), {"path": tmp_path})(), cfg, tmp_path)
    assert [r["trials"] for r in result.verify["rounds"]] == [[0, 1], [2, 3]]
    ratio = result.verify["rounds"][0]["measured_over_predicted_max"]["latency_ms"]
    assert ratio == pytest.approx(1.2)
    assert result.chosen.number == 2 and result.verify["meeting_slos_as_measured"] == [2, 3]


def test_verify_needs_a_table_measured_here(run_cli, tiny_run, tmp_path):
    from hapi_dse.testing import write_synthetic_table

    write_synthetic_table(tiny_run, "pixel6", tmp_path)
    res = run_cli(
        *search_args(
            tiny_run, tmp_path, tmp_path / "s", "--verify", "2", device="pixel6", trials=10
        )
    )
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "--verify" in res.stderr
