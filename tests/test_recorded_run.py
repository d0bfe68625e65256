"""'hapi export RESULT' and 'hapi plot RESULT' use the run the search recorded (#12), as
'hapi eval' uses the run the export recorded; --model still wins, and a run that is gone
falls back to the bundled example with the usual one-line refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hapi_dse.testing import search_args


@pytest.fixture(scope="module")
def searched(
    tiny_run: Path, tmp_path_factory: pytest.TempPathFactory, write_fake_table
) -> dict[str, Path]:
    """A search of a copy of the tiny run on a made-up table: the result and the run."""
    from hapi_dse.cli import main

    root = tmp_path_factory.mktemp("recorded")
    run = root / "run"
    shutil.copytree(tiny_run, run)
    write_fake_table(run, root / "profiles", "devx")
    argv = search_args(run, root / "profiles", root / "result", device="devx", trials=30, seed=1)
    try:
        main(argv)
    except SystemExit as e:
        assert not e.code
    assert (root / "result" / "devx" / "design.json").is_file()
    return {"run": run, "result": root / "result", "profiles": root / "profiles"}


def test_export_and_plot_use_the_recorded_run(searched, run_cli, tmp_path: Path) -> None:
    from hapi_dse.run import RunDir

    res = run_cli("export", searched["result"], "--out", tmp_path / "m.onnx")
    assert res.exit_code == 0, res.stderr
    side = json.loads((tmp_path / "m.export.json").read_text())
    assert Path(side["run"]) == searched["run"].resolve()
    assert side["model_id"] == RunDir(searched["run"]).model_id

    png = tmp_path / "p.png"
    res = run_cli("plot", searched["result"], "--out", png, "--profiles", searched["profiles"])
    assert res.exit_code == 0, res.stderr
    refs = json.loads(png.with_suffix(".plot.json").read_text())["references"]
    assert [r["kind"] for r in refs].count("backbone") == 1 and len(refs) > 1


def test_trial_export_uses_the_recorded_run(searched) -> None:
    from hapi_dse.deploy.inputs import design_run, load_design

    dfile = load_design(searched["result"], trial=0)
    assert design_run(dfile, None).path == searched["run"].resolve()


def test_a_run_that_is_gone_falls_back_with_one_line(searched, run_cli, tmp_path) -> None:
    result = tmp_path / "result"
    shutil.copytree(searched["result"], result)
    doc = json.loads((result / "devx" / "design.json").read_text())
    doc["provenance"]["inputs"]["exits_val"]["path"] = str(tmp_path / "gone" / "exits_val.npz")
    (result / "devx" / "design.json").write_text(json.dumps(doc))
    res = run_cli("export", result, "--out", tmp_path / "m.onnx")
    assert res.exit_code == 2
    assert "pass --model" in res.stderr and len(res.stderr.strip().splitlines()) == 1
