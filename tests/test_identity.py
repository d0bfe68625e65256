"""Identity of a training: ``model_id`` is the backbone name + a short hash of the
architecture *and of the weights* (DESIGN 2.1), so two trainings never share an id.

Two runs of one architecture (the tiny run and a copy with one weight nudged) get two ids;
a table, design, trial or export made from one is refused for the other with one line naming
both ids, and nothing is written. ``weights_sha256`` in model.json guards the run itself: a
swapped ``weights.pt`` is refused. Runs older than that key still load.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from hapi_dse.errors import ArtefactError
from hapi_dse.models.early_exit import weights_identity
from hapi_dse.run import RunDir, bundled_example
from hapi_dse.testing import search_args

DEVICE = "fakehost"


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _model(run: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((run / "model.json").read_text())
    return doc


def _write_model(run: Path, doc: dict[str, Any]) -> None:
    (run / "model.json").write_text(json.dumps(doc, indent=2) + "\n")


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its sha256 (what must stay as it was)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(res: Any, *names: str) -> str:
    """Exit 2, one stderr line 'hapi: error: ...' naming every one of ``names``."""
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hapi: error: "), res.stderr
    assert "Traceback" not in res.stderr
    for n in names:
        assert n in lines[0], (n, lines[0])
    return str(lines[0])


@pytest.fixture(scope="session")
def write_table_for(write_fake_table: Any) -> Any:
    """A made-up table of ``run`` (latency from FLOPs), named by its model_id."""

    def write(run: Path, profiles: Path, *, device: str = DEVICE) -> Path:
        return write_fake_table(run, profiles, device)

    return write


def _copy_table(src: Path, dest: Path) -> None:
    """A table file and its sidecar copied under another name (as a user might)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    shutil.copyfile(src.with_suffix(".json"), dest.with_suffix(".json"))


@pytest.fixture(scope="module")
def other(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another training of the tiny run's architecture: the same files, one weight nudged,
    its identity recomputed as 'hapi train' computes it."""
    import torch

    out = tmp_path_factory.mktemp("identity") / "other"
    shutil.copytree(tiny_run, out)
    state = torch.load(out / "weights.pt", map_location="cpu", weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 0.01
    torch.save(state, out / "weights.pt")
    doc = _model(out)
    doc["model_id"], doc["weights_sha256"] = weights_identity(doc["arch"], out / "weights.pt")
    _write_model(out, doc)
    train = json.loads((out / "train.json").read_text())
    train["model_id"], train["weights_sha256"] = doc["model_id"], doc["weights_sha256"]
    (out / "train.json").write_text(json.dumps(train, indent=2) + "\n")
    return out


@pytest.fixture(scope="module")
def ids(tiny_run: Path, other: Path) -> dict[str, str]:
    """The model ids of the two trainings."""
    return {"a": RunDir(tiny_run).model_id, "b": RunDir(other).model_id}


@pytest.fixture(scope="module")
def searched(
    tiny_run: Path, tmp_path_factory: pytest.TempPathFactory, write_table_for: Any
) -> dict[str, Path]:
    """A quick search of the tiny run on its own table."""
    from hapi_dse.search import SearchConfig, run_search

    root = tmp_path_factory.mktemp("identity-search")
    profiles = root / "profiles"
    write_table_for(tiny_run, profiles)
    out = root / "result"
    run_search(
        SearchConfig(
            devices=(DEVICE,),
            model=str(tiny_run),
            profiles=str(profiles),
            trials=12,
            out=out,
        )
    )
    return {"profiles": profiles, "out": out}


# -- the identity ----------------------------------------------------------------------------
def test_two_trainings_of_one_architecture_get_two_ids(tiny_run: Path, other: Path) -> None:
    doc = _model(tiny_run)
    train = json.loads((tiny_run / "train.json").read_text())
    mid, digest = weights_identity(doc["arch"], tiny_run / "weights.pt")
    assert doc["model_id"] == train["model_id"] == mid  # what 'hapi train' wrote
    assert (
        doc["weights_sha256"] == train["weights_sha256"] == digest == _sha(tiny_run / "weights.pt")
    )
    a, b = RunDir(tiny_run), RunDir(other)
    assert _model(other)["arch"] == doc["arch"]  # one architecture ...
    assert a.model_id != b.model_id  # ... two trainings, two ids
    assert a.model_id.startswith("resnet20-") and b.model_id.startswith("resnet20-")
    assert a.weights_sha256 == digest != b.weights_sha256


def test_a_swapped_weights_pt_is_refused(
    run_cli, tiny_run: Path, other: Path, tmp_path: Path, write_design: Any
) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_run, mixed)
    shutil.copyfile(other / "weights.pt", mixed / "weights.pt")  # model.json still says A
    a, b = _sha(tiny_run / "weights.pt")[:12], _sha(other / "weights.pt")[:12]
    for use in (lambda r: r.weights_sha256, lambda r: r.load_model()):
        with pytest.raises(ArtefactError) as e:
            use(RunDir(mixed))
        msg = str(e.value)
        assert "\n" not in msg and a in msg and b in msg
    design = write_design(tiny_run, tmp_path / "design.json", [(1, "linear", 0.6)])
    out = tmp_path / "x.onnx"
    _refused(run_cli("export", design, "--model", mixed, "--out", out), a, b, "weights.pt")
    assert not out.exists()


def test_a_malformed_weights_sha256_is_one_line(
    run_cli, tiny_run: Path, tmp_path: Path, write_design: Any
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    doc = _model(bad)
    doc["weights_sha256"] = 42
    _write_model(bad, doc)
    design = write_design(tiny_run, tmp_path / "design.json", [(1, "linear", 0.6)])
    res = run_cli("export", design, "--model", bad, "--out", tmp_path / "x.onnx")
    _refused(res, "weights_sha256", "64 hex digits")


def test_runs_without_weights_sha256_still_load(
    tiny_run: Path, other: Path, tmp_path: Path, write_design: Any
) -> None:
    from hapi_dse.deploy.inputs import design_run, load_design

    old = tmp_path / "old-run"
    shutil.copytree(other, old)
    doc = _model(old)
    del doc["weights_sha256"]
    _write_model(old, doc)
    run = RunDir(old)
    assert run.weights_sha256 == _sha(other / "weights.pt")  # computed, nothing to check
    assert run.load_model() is not None
    design = write_design(old, tmp_path / "design.json", [(1, "linear", 0.6)])
    assert design_run(load_design(design), str(old)).path == old


# -- hapi search -------------------------------------------------------------------------------
def test_search_finds_no_table_of_another_training(
    run_cli, other: Path, searched: dict[str, Path], ids: dict[str, str], tmp_path: Path
) -> None:
    before = _snapshot(searched["profiles"])
    out = tmp_path / "result"
    res = run_cli(*search_args(other, searched["profiles"], out, device=DEVICE, trials=5))
    _refused(res, ids["b"], ids["a"], "hapi profile")  # no table for B; the one for A named
    assert not out.exists()
    assert _snapshot(searched["profiles"]) == before


def test_search_refuses_a_table_of_another_training(
    run_cli, tiny_run: Path, other: Path, ids: dict[str, str], tmp_path: Path, write_table_for
) -> None:
    """A's table copied under B's file name: its sidecar still says A."""
    profiles = tmp_path / "profiles"
    mine = write_table_for(tiny_run, profiles)
    _copy_table(mine, mine.with_name(f"{ids['b']}.csv"))
    before = _snapshot(profiles)
    out = tmp_path / "result"
    res = run_cli(*search_args(other, profiles, out, device=DEVICE, trials=5))
    _refused(res, ids["a"], ids["b"])
    assert not out.exists()
    assert _snapshot(profiles) == before


def test_search_records_the_model_it_searched(
    searched: dict[str, Path], ids: dict[str, str]
) -> None:
    side = json.loads((searched["out"] / DEVICE / "search.json").read_text())
    assert side["model_id"] == ids["a"]
    design = searched["out"] / DEVICE / "design.json"
    if design.is_file():
        assert json.loads(design.read_text())["model_id"] == ids["a"]


# -- hapi profile ------------------------------------------------------------------------------
def test_profile_of_another_training_writes_its_own_table(
    tiny_run: Path, other: Path, ids: dict[str, str], tmp_path: Path, write_table_for
) -> None:
    from hapi_dse.paths import default_profiles_out
    from hapi_dse.profiling.modes import ProfileConfig
    from hapi_dse.profiling.names import table_path
    from hapi_dse.profiling.runner import _refuse_overwrite

    profiles = tmp_path / "profiles"
    mine = write_table_for(tiny_run, profiles)
    cfg = ProfileConfig(device=DEVICE, profiles=str(profiles))
    dest = table_path(default_profiles_out(cfg.profiles), DEVICE, ids["b"])
    assert dest != mine and not dest.exists()  # B's table would not replace A's
    _refuse_overwrite(cfg, ids["b"], "measured", "the run B")
    _refuse_overwrite(cfg, ids["a"], "measured", "the run A")  # A replaces its own


def test_profile_refuses_to_replace_a_table_of_another_model(
    run_cli, tiny_run: Path, other: Path, ids: dict[str, str], tmp_path: Path, write_table_for
) -> None:
    """A file under B's name whose sidecar says A: hapi did not write it for B."""
    from hapi_dse.profiling.modes import ProfileConfig
    from hapi_dse.profiling.runner import _refuse_overwrite

    profiles = tmp_path / "profiles"
    mine = write_table_for(tiny_run, profiles, device="pixel6")  # pixel6: a shipped spec
    _copy_table(mine, mine.with_name(f"{ids['b']}.csv"))
    before = _snapshot(profiles)
    res = run_cli(
        "profile", "--model", other, "--device", "pixel6", "--modelled", "--profiles", profiles
    )
    _refused(res, ids["a"], ids["b"], "--force", str(other))
    assert _snapshot(profiles) == before
    forced = ProfileConfig(device="pixel6", profiles=str(profiles), force=True)
    _refuse_overwrite(forced, ids["b"], "modelled", "the run B")


# -- hapi export -------------------------------------------------------------------------------
def test_export_refuses_a_design_of_another_training(
    run_cli, tiny_run: Path, other: Path, ids: dict[str, str], tmp_path: Path, write_design
) -> None:
    design = write_design(tiny_run, tmp_path / "design.json", [(1, "linear", 0.6)])
    out = tmp_path / "x.onnx"
    line = _refused(run_cli("export", design, "--model", other, "--out", out), ids["a"], ids["b"])
    assert str(other) in line
    staged = tmp_path / "staged"
    res = run_cli("export", design, "--model", other, "--out", staged, "--format", "staged")
    _refused(res, ids["a"], ids["b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["design.json"]


def test_export_refuses_a_trial_of_another_training(
    run_cli, other: Path, searched: dict[str, Path], ids: dict[str, str], tmp_path: Path
) -> None:
    with open(searched["out"] / DEVICE / "trials.csv", newline="") as f:
        trial = next(r["trial"] for r in csv.DictReader(f) if r["state"] == "COMPLETE")
    before = _snapshot(searched["out"])
    out = tmp_path / "x.onnx"
    res = run_cli("export", searched["out"], "--trial", trial, "--model", other, "--out", out)
    _refused(res, ids["a"], ids["b"])
    assert not out.exists()
    assert _snapshot(searched["out"]) == before


# -- hapi eval ---------------------------------------------------------------------------------
def test_eval_refuses_an_export_of_another_training(
    run_cli,
    tiny_run: Path,
    other: Path,
    ids: dict[str, str],
    shared_export: dict[str, Any],
    tmp_path: Path,
) -> None:
    exp = shared_export
    assert exp["info"]["model_id"] == ids["a"]
    before = _snapshot(exp["out"].parent)
    report = tmp_path / "r.json"
    res = run_cli("eval", exp["out"], "--model", other, "--out", report, "--warmup", "0")
    _refused(res, ids["a"], ids["b"])
    assert not report.exists()
    res = run_cli("eval", exp["out"], "--model", other, "--warmup", "0")  # default --out
    _refused(res, ids["a"], ids["b"])
    assert _snapshot(exp["out"].parent) == before


# -- the bundled example -----------------------------------------------------------------------
def test_the_bundled_example_id_covers_its_weights() -> None:
    from hapi_dse.profiling.table import load_table

    ex = bundled_example()
    if not (ex / "weights.pt").is_file():
        pytest.skip("bundled example not built")
    doc = _model(ex)
    mid, digest = weights_identity(doc["arch"], ex / "weights.pt")
    assert doc["model_id"] == mid and doc["weights_sha256"] == digest
    assert json.loads((ex / "train.json").read_text())["model_id"] == mid
    shipped = ex.parent.parent / "shipped_profiles"
    tables = sorted(shipped.glob("*/*.csv"))
    assert {p.parent.name for p in tables} >= {"pixel6", "jetson-nano", "raspberry-pi-4"}
    for p in tables:
        assert p.stem == mid, p
        table = load_table(p.parent.name, mid, shipped)
        assert table.sidecar["model_id"] == mid


@pytest.mark.slow  # exports every segment of the tiny run (about 2 minutes)
def test_profile_of_another_training_keeps_the_first_table(
    run_cli, tiny_run: Path, other: Path, ids: dict[str, str], tmp_path: Path, write_table_for
) -> None:
    """End to end: a modelled profile of the other training beside the tiny run's table."""
    from hapi_dse.profiling.table import load_table

    profiles = tmp_path / "profiles"
    mine = write_table_for(tiny_run, profiles, device="pixel6")
    before = _snapshot(profiles)
    res = run_cli(
        "profile",
        "--model",
        other,
        "--device",
        "pixel6",
        "--modelled",
        "--profiles",
        profiles,
        "--export-dir",
        tmp_path / "segments",
    )
    assert res.exit_code == 0, res.stderr
    after = _snapshot(profiles)
    assert {k: after[k] for k in before} == before  # A's table untouched
    b = RunDir(other)
    assert json.loads((tmp_path / "segments" / "segments.json").read_text())["model_id"] == ids["b"]
    table = load_table("pixel6", ids["b"], profiles)
    assert table.path != mine and table.source == "modelled"
    assert table.sidecar["provenance"]["inputs"]["weights.pt"]["sha256"] == b.weights_sha256
