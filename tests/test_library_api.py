"""``import hapi_dse as hapi``: the API's names on the package, imported on first use (the
import itself stays cheap), each entry point returning a documented dataclass, and progress
as an argument of each call."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

#: what ``import hapi_dse`` must not import (each costs from 0.1 s to seconds)
HEAVY = ("torch", "optuna", "onnxruntime", "onnx", "matplotlib", "pandas", "numpy", "scipy")


def _imported(code: str) -> set[str]:
    """The modules a fresh interpreter imports to run ``code`` (``-X importtime``)."""
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        line.rsplit("|", 1)[1].strip()
        for line in res.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_import_hapi_dse_imports_nothing_heavy() -> None:
    mods = _imported("import hapi_dse")
    assert "hapi_dse" in mods  # the measurement works
    assert not {m for m in mods if m.split(".")[0] in HEAVY}
    assert sorted(m for m in mods if m.startswith("hapi_dse")) == ["hapi_dse"]


def test_an_attribute_imports_the_api_and_no_more() -> None:
    """``hapi.train`` imports hapi_dse.api (numpy, the cost model), not torch nor optuna:
    those come with the calls that need them."""
    mods = _imported("import hapi_dse as hapi; hapi.search; hapi.train; hapi.evaluate")
    assert "hapi_dse.api" in mods
    assert not {m for m in mods if m.split(".")[0] in ("torch", "optuna", "matplotlib")}


def test_the_package_exposes_the_api() -> None:
    import hapi_dse
    import hapi_dse.api as api

    assert set(hapi_dse.__all__) == {"__version__", *api.__all__}
    for name in set(api.__all__) - {"search"}:
        assert getattr(hapi_dse, name) is getattr(api, name), name
        assert name in dir(hapi_dse)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        hapi_dse.nothing  # noqa: B018


def test_hapi_search_stays_the_api_search_once_the_subpackage_is_imported() -> None:
    """Python sets ``hapi_dse.search`` to the subpackage whenever it is imported (the
    search itself imports it): it is that subpackage, called as the API's search."""
    code = (
        "import inspect, sys\n"
        "import hapi_dse as hapi\n"
        "run = hapi.load_run(); val = run.stats('val'); costs = hapi.load_costs('pixel6', run)\n"
        "for seed in (0, 1):\n"
        "    r = hapi.search(val, costs, trials=20, seed=seed)\n"
        "    assert r.chosen is not None and len(r.records) == 20, r\n"
        "import hapi_dse.search.runner as runner\n"
        "from hapi_dse.search import SearchConfig\n"
        "assert hapi.search is sys.modules['hapi_dse.search'] and runner.run_search\n"
        "assert inspect.signature(hapi.search) == inspect.signature(hapi.api.search)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def _result_classes() -> list[type]:
    import hapi_dse.api as api
    from hapi_dse.plotting import FigureInfo
    from hapi_dse.profiling.modes import ProfiledTable
    from hapi_dse.search.records import DeviceResult, TrialRecord

    return [
        api.TrainedRun,
        api.ExportedDesign,
        api.Evaluation,
        DeviceResult,
        TrialRecord,
        ProfiledTable,
        FigureInfo,
    ]


@pytest.mark.parametrize("cls", _result_classes(), ids=lambda c: c.__name__)
def test_result_classes_document_every_field(cls: type) -> None:
    assert dataclasses.is_dataclass(cls)
    doc = cls.__doc__ or ""
    missing = [f.name for f in dataclasses.fields(cls) if f"``{f.name}``" not in doc]
    assert not missing, f"{cls.__name__}'s docstring does not describe {missing}"


def test_search_meets_the_slo() -> None:
    import hapi_dse as hapi
    from hapi_dse.search.records import DeviceResult

    run = hapi.load_run()
    stats = run.stats("val")
    costs = hapi.load_costs("pixel6", run)
    result = hapi.search(stats, costs, slos=["latency=1ms"])
    assert isinstance(result, DeviceResult)
    assert result.chosen is not None and result.chosen.feasible
    assert result.chosen.metrics is not None and result.chosen.metrics["latency_ms"] <= 1.0
    assert len(result.records) == 1000

    tight = hapi.search(stats, costs, slos=["latency=0.2ms"], trials=200, seed=1)
    assert any(not r.feasible for r in tight.records if r.metrics is not None)  # it bites
    assert tight.chosen is not None
    assert tight.chosen.metrics is not None and tight.chosen.metrics["latency_ms"] <= 0.2


def test_train_writes_a_run_and_describes_it(tmp_path: Path, bars: list[bool]) -> None:
    import hapi_dse as hapi
    from hapi_dse.run import RUN_FILES

    out = tmp_path / "run"
    trained = hapi.train(
        out, "digits", backbone="resnet20", heads="linear,conv", epochs=1, exit_epochs=1,
        batch_size=64, limit=400, seed=0, threads=1, progress=False,
    )  # fmt: skip
    assert isinstance(trained, hapi.TrainedRun)
    assert bars == [False, False]  # the backbone's bar and the exits', both asked off
    assert trained.run.path == out and all((out / f).is_file() for f in RUN_FILES)
    train_json = json.loads((out / "train.json").read_text())
    assert trained.train_json == train_json
    assert trained.model_id == train_json["model_id"] == trained.run.model_id
    assert trained.backbone_test_acc == train_json["backbone_test_acc"]
    assert trained.backbone_val_acc == train_json["backbone_val_acc"]
    val = trained.run.stats("val")
    columns = [(int(p), str(h)) for p, h in zip(val.position, val.head, strict=True)]
    assert [(e["position"], e["head"]) for e in trained.per_exit] == columns
    assert {e["head"] for e in trained.per_exit} == {"linear", "conv", "final"}
    assert trained.timings["total_s"] >= trained.timings["backbone_s"] > 0
    assert train_json["settings"]["heads"] == ["linear", "conv"]
    assert "progress" not in train_json["settings"]  # not a setting of the run


def test_evaluate_returns_what_the_report_holds(
    shared_export: dict[str, Any], write_fake_table, tmp_path: Path, bars: list[bool]
) -> None:
    import hapi_dse as hapi

    model = shared_export["out"]
    profiles = tmp_path / "profiles"
    write_fake_table(shared_export["run"], profiles, "host")
    kw: dict[str, Any] = dict(profiles=profiles, limit=60, warmup=2, passes=1, progress=False)
    ev = hapi.evaluate(model, out=tmp_path / "r.json", **kw)
    assert isinstance(ev, hapi.Evaluation) and bars == [False]
    assert ev.path == tmp_path / "r.json"
    rep = json.loads(ev.path.read_text())
    assert ev.report == rep
    assert ev.n == rep["n"] == 60 and sum(ev.exit_histogram) == 60
    assert ev.accuracy == rep["measured"]["accuracy"]
    assert ev.latency_ms == rep["measured"]["latency_ms"] and ev.latency_ms["p90"] > 0
    assert ev.exit_histogram == rep["measured"]["exit_histogram"]
    assert ev.predicted_accuracy == rep["predicted"]["accuracy"] is not None
    assert ev.predicted_latency_ms == rep["predicted"]["latency_ms"]
    assert ev.relative_error == rep["relative_error"]
    assert ev.relative_error["latency_mean"] == pytest.approx(
        ev.latency_ms["mean"] / ev.predicted_latency_ms["mean"] - 1
    )
    assert ev.exit_agreement == rep["fidelity"]["exit_agreement"]
    assert ev.broken == [s["slo"] for s in rep["slos"] if s["verdict"] == "broken"]
    assert (ev.dataset, ev.split, ev.model) == (rep["dataset"], "test", model)

    before = sorted(p.name for p in model.parent.iterdir())
    again = hapi.evaluate(model, **kw)  # writes nothing unless asked
    assert again.path is None and sorted(p.name for p in model.parent.iterdir()) == before
    assert again.n == 60 and again.exit_histogram == ev.exit_histogram
