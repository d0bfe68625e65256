"""The Python API (hapi_dse.api): its README section and docstrings run, a search finds what
'hapi search' finds for the same seed, and nothing is written unless asked."""

from __future__ import annotations

import doctest
import importlib
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCTEST_MODULES = [
    "hapi_dse.api",
    "hapi_dse.cost.metrics",
    "hapi_dse.search.config",
    "hapi_dse.testing",
]


def _run_examples(text: str, name: str) -> doctest.TestResults:
    test = doctest.DocTestParser().get_doctest(text, {}, name, name, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    return runner.summarize(verbose=False)


def test_readme_python_api_section_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README's Python API section has no python block"
    monkeypatch.chdir(tmp_path)
    res = _run_examples("\n".join(blocks), "README.md#python-api")
    assert res.failed == 0 and res.attempted >= 8
    assert list(tmp_path.iterdir()) == []  # the API wrote nothing


@pytest.mark.parametrize("module", DOCTEST_MODULES)
def test_docstring_examples_run(module: str) -> None:
    res = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted >= 2


def test_api_search_finds_what_the_cli_finds() -> None:
    """The snapshot's first case (scripts/search_snapshot.py), run through the API."""
    import hapi_dse.api as hapi

    snap = json.loads((ROOT / "tests" / "data" / "search_snapshot.json").read_text())
    cli = snap["nsga2-slo"]["pixel6"]
    run = hapi.load_run()
    val, test = run.stats("val"), run.stats("test")
    result = hapi.search(
        val,
        hapi.load_costs("pixel6", run, val),
        test=test,
        slos=["latency=0.2ms"],
        trials=300,
        seed=3,
        device="pixel6",
        model_id=run.model_id,
    )
    assert len(result.records) == len(cli["trials"])
    for rec, row in zip(result.records, cli["trials"], strict=True):
        assert rec.design is not None and rec.metrics is not None
        assert rec.design.compact() == row["exits"]
        assert rec.metrics["latency_ms"] == pytest.approx(float(row["latency_ms"]), rel=1e-12)
    assert [r.number for r in result.front] == [int(r["trial"]) for r in cli["pareto"]]
    assert result.chosen is not None and result.chosen.number == cli["design"]["trial"]


def test_api_search_writes_only_where_asked(tmp_path: Path) -> None:
    import hapi_dse.api as hapi
    from hapi_dse.cost import parse_slo

    run = hapi.load_run()
    val = run.stats("val")
    before = sorted(os.listdir(tmp_path))
    out = tmp_path / "res"
    result = hapi.search(
        val,
        hapi.load_costs("pixel6", run, val),
        space="small",
        slos=[parse_slo("latency=0.25ms")],
        objectives=["accuracy", "energy"],
        trials=40,
        seed=1,
        pick="knee",
        out=out,
    )
    assert sorted(os.listdir(tmp_path)) == [*before, "res"]
    assert sorted(os.listdir(out)) == [
        ".hapi_files.json",
        "design.json",
        "pareto.csv",
        "search.json",
        "trials.csv",
    ]
    written = json.loads((out / "design.json").read_text())
    assert result.chosen is not None and written["trial"] == result.chosen.number
    assert written["objectives"] == ["accuracy", "energy_mj"] and written["pick"] == "knee"
    info = hapi.plot_info([out], x="energy", y="accuracy")
    assert len(info) == 1 and info[0].x == "energy_mj"
    assert sorted(info[0].series[0].front["trial"]) == sorted(r.number for r in result.front)


def test_api_refuses_bad_input_before_searching() -> None:
    import hapi_dse.api as hapi
    from hapi_dse.errors import UsageError

    run = hapi.load_run()
    val = run.stats("val")
    costs = hapi.load_costs("pixel6", run, val)
    with pytest.raises(UsageError, match="unknown SLO metric"):
        hapi.search(val, costs, slos=["speed=3"], trials=5)
    with pytest.raises(UsageError, match="^pick: unknown rule .fastest."):
        hapi.search(val, costs, pick="fastest", trials=5)
    with pytest.raises(UsageError, match="^trials must be >= 1"):  # the field, not the flag
        hapi.search(val, costs, trials=0)


def test_api_search_refuses_an_out_it_may_not_replace_before_searching(tmp_path: Path) -> None:
    import hapi_dse.api as hapi
    from hapi_dse.errors import UsageError

    run = hapi.load_run()
    val = run.stats("val")
    (tmp_path / "mine.txt").write_text("not hapi's")
    with pytest.raises(UsageError, match="never"):
        hapi.search(val, hapi.load_costs("pixel6", run, val), trials=5, out=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_api_export_of_a_searched_design_runs_as_predicted(tmp_path: Path) -> None:
    """search(out=...) then export(): the ONNX graph takes the exits the design predicts."""
    import numpy as np
    import onnxruntime as ort

    import hapi_dse.api as hapi
    from hapi_dse.cost import simulate
    from hapi_dse.deploy.inputs import load_samples

    run = hapi.load_run()
    val = run.stats("val")
    res = tmp_path / "res"
    result = hapi.search(
        val,
        hapi.load_costs("pixel6", run, val),
        slos=["latency=0.25ms"],
        trials=60,
        seed=2,
        device="pixel6",
        model_id=run.model_id,
        out=res,
    )
    assert result.chosen is not None and result.chosen.design is not None
    exported = hapi.export(res, tmp_path / "m.onnx")
    assert isinstance(exported, hapi.ExportedDesign)
    assert exported.model_id == run.model_id and exported.path == tmp_path / "m.onnx"
    assert exported.design == result.chosen.design and exported.device == "pixel6"
    assert exported.info == json.loads((tmp_path / "m.export.json").read_text())
    assert exported.sidecar == tmp_path / "m.export.json"
    assert [s["text"] for s in exported.slos] == ["latency=0.25ms"]
    assert len(exported.exits) == len(result.chosen.design.exits) + 1
    assert max(exported.max_abs_diff.values()) <= exported.info["check"]["atol"]
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = load_samples(run, "val").x[:64].astype(np.float32)
    names = [o.name for o in sess.get_outputs()]
    assert "exit_index" in names, names
    got = [
        int(sess.run(["exit_index"], {sess.get_inputs()[0].name: x[i : i + 1]})[0].ravel()[0])
        for i in range(len(x))
    ]
    want, _ = simulate(result.chosen.design, val, hapi.load_costs("pixel6", run, val))
    assert np.mean(np.array(got) == want[:64]) >= 0.95


def test_api_profile_models_a_device_the_search_then_uses(tiny_run: Path, tmp_path: Path) -> None:
    import numpy as np

    import hapi_dse.api as hapi
    from hapi_dse.profiling.specs import find_spec

    table = hapi.profile(
        tiny_run, "pixel6", modelled=True, out=tmp_path / "profiles", exporter="legacy"
    )
    run = hapi.load_run(tiny_run)
    assert table.path == tmp_path / "profiles" / "pixel6" / f"{run.model_id}.csv"
    rows = table.result.rows
    assert {r["source"] for r in rows} == {"modelled"}
    power = find_spec("pixel6").active_power_w
    np.testing.assert_allclose(
        [r["energy_mj"] for r in rows], [power * r["latency_ms"] for r in rows], rtol=1e-4
    )
    val = run.stats("val")
    costs = hapi.load_costs("pixel6", run, val, profiles=tmp_path / "profiles")
    assert costs.source == "modelled" and costs.has_energy
    result = hapi.search(val, costs, trials=20, seed=0, model_id=run.model_id)
    assert len(result.records) == 20 and result.chosen is not None


def test_api_profile_writes_nothing_unless_asked(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``out`` the table comes back in memory and no ``./profiles`` appears; the
    spec is looked up in ``profiles`` (here a copy of pixel6's with twice the power)."""
    import hapi_dse.api as hapi
    from hapi_dse.profiling.specs import find_spec, spec_paths

    mine = tmp_path / "mine"
    (mine / "specs").mkdir(parents=True)
    text = spec_paths()["pixel6"].read_text()
    power = find_spec("pixel6").active_power_w
    line = next(x for x in text.splitlines() if x.replace(" ", "").startswith("active_power_w="))
    (mine / "specs" / "pixel6.toml").write_text(
        text.replace(line, f"active_power_w = {2 * power!r}")
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("HAPI_PROFILES", raising=False)
    before = sorted(p.name for p in tmp_path.iterdir())
    table = hapi.profile(tiny_run, "pixel6", modelled=True, profiles=mine, exporter="legacy")
    assert table.path is None and "not written" in table.summary()
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == before
    assert sorted(p.name for p in mine.iterdir()) == ["specs"]
    rows = table.result.rows
    assert {r["source"] for r in rows} == {"modelled"}
    for r in rows:
        assert r["energy_mj"] == pytest.approx(2 * power * r["latency_ms"], rel=1e-4)
