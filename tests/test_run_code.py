"""A run directory is data: model.json may name only registered backbones unless the command
line names the factory (``--backbone MODULE:FACTORY``) or trusts it (``--trust-run-code``)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from hapi_dse.errors import ArtefactError
from hapi_dse.run import CodeTrust, RunDir


@pytest.fixture
def code_run(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A copy of the tiny run whose model.json names a factory that leaves a marker file."""
    marker = tmp_path / "marker"
    module = f"hapi_evil_{uuid.uuid4().hex}"
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / f"{module}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n\n\n"
        "def factory(**kw):\n"
        f"    Path({str(marker)!r}).write_text('called')\n"
        "    from hapi_dse.models.backbones import resnet20\n\n"
        "    return resnet20(**kw)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    model = json.loads((run / "model.json").read_text())
    spec = f"{module}:factory"
    model["arch"]["backbone"] = spec
    (run / "model.json").write_text(json.dumps(model))
    return {"run": run, "marker": marker, "spec": spec}


def _refused(res, spec: str) -> None:
    assert res.exit_code == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert f"names backbone {spec!r}, which is code" in lines[0]
    assert "resnet20" in lines[0] and "--trust-run-code" in lines[0]
    assert f"--backbone {spec}" in lines[0]


def export_segments(run_cli, code_run, tmp_path, *extra: str):  # type: ignore[no-untyped-def]
    """``hapi profile --export-only`` of the run that names a factory."""
    return run_cli(
        "profile", "--model", code_run["run"], "--export-only", "--export-dir", tmp_path / "x",
        *extra,
    )  # fmt: skip


def test_profile_refuses_a_factory_named_by_model_json(code_run, tmp_path, run_cli) -> None:
    res = export_segments(run_cli, code_run, tmp_path)
    _refused(res, code_run["spec"])
    assert not code_run["marker"].exists()


def test_export_refuses_a_factory_named_by_model_json(
    code_run, tmp_path, run_cli, write_design
) -> None:
    design = write_design(code_run["run"], tmp_path / "d.json", [(1, "linear", 0.5)])
    res = run_cli("export", design, "--model", code_run["run"], "--out", tmp_path / "m.onnx")
    _refused(res, code_run["spec"])
    assert not code_run["marker"].exists()


def test_another_backbone_on_the_command_line_does_not_allow_it(code_run, tmp_path, run_cli):
    res = export_segments(run_cli, code_run, tmp_path, "--backbone", "os:system")
    _refused(res, code_run["spec"])
    assert not code_run["marker"].exists()


@pytest.mark.parametrize("how", ["trust", "backbone"])
def test_trust_flag_or_named_factory_runs_it(code_run, tmp_path, run_cli, how) -> None:
    flag = ["--trust-run-code"] if how == "trust" else ["--backbone", code_run["spec"]]
    export_segments(run_cli, code_run, tmp_path, *flag)
    assert code_run["marker"].exists()


def test_load_model_takes_what_is_allowed_as_a_parameter(code_run) -> None:
    run = RunDir(code_run["run"])
    with pytest.raises(ArtefactError, match="which is code"):
        run.load_model(CodeTrust(backbone="other.mod:factory"))
    with pytest.raises(ArtefactError, match="which is code"):
        run.check_arch()
    assert not code_run["marker"].exists()
    run.check_arch(CodeTrust(backbone=code_run["spec"]))
    run.check_arch(CodeTrust(trust=True))
    with pytest.raises(ArtefactError, match="which is code"):
        run.check_arch()  # nothing of the calls before is remembered
    assert not code_run["marker"].exists()


def test_api_export_takes_trust_code(code_run, tmp_path, write_design) -> None:
    """The API's trust_code reaches the export of the run's model (refused without it,
    built with it: the factory's module runs)."""
    import hapi_dse as hapi

    design = write_design(code_run["run"], tmp_path / "d.json", [(1, "linear", 0.5)])
    with pytest.raises(ArtefactError, match="which is code"):
        hapi.export(design, tmp_path / "a.onnx", run=code_run["run"])
    assert not code_run["marker"].exists()
    out = hapi.export(design, tmp_path / "b.onnx", run=code_run["run"], trust_code=True)
    assert out.path.is_file() and code_run["marker"].read_text() == "called"


@pytest.mark.parametrize(
    "kwargs", [{"depth": {"a": 1}}, [1, 2], {"x": [1, {"b": 2}]}, "n=3"], ids=str
)
def test_backbone_kwargs_must_be_plain_data(tiny_run, tmp_path, kwargs) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    model = json.loads((run / "model.json").read_text())
    model["arch"]["backbone_kwargs"] = kwargs
    (run / "model.json").write_text(json.dumps(model))
    with pytest.raises(ArtefactError, match="backbone_kwargs must map names"):
        RunDir(run).load_model(CodeTrust(trust=True))


def test_a_registered_backbone_loads_without_any_flag(tiny_run) -> None:
    run = RunDir(tiny_run)
    assert run.model["arch"]["backbone"] == "resnet20"
    net = run.load_model()
    assert not net.training
