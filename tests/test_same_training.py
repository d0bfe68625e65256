"""One check that an artefact belongs to the run at hand (:mod:`hapi_dse.training_id`): equal
model ids or a one-line refusal naming both ids, what holds the id at hand and the fix; the
sites that have no test of their own elsewhere (test_identity covers designs, trials,
exports, tables and the profile overwrite) are checked here."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from hapi_dse.errors import ArtefactError
from hapi_dse.run import RunDir
from hapi_dse.training_id import check_same_training, same_training


def _another(model_id: str) -> str:
    """A model id of another training of the same backbone: its hash changed."""
    return model_id[:-1] + ("1" if model_id[-1] == "0" else "0")


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_same_training_passes_and_another_is_one_line(tiny_run: Path) -> None:
    run = RunDir(tiny_run)
    mine = run.model_id
    assert same_training(mine, mine)
    check_same_training("d.json: design", mine, run, fix="pass --model")
    check_same_training("d.json: design", mine, mine, holder="x", fix="pass --model")
    for theirs in (_another(mine), mine.upper(), f"{mine}\nx", "", None, 42):
        assert not same_training(theirs, mine)
        with pytest.raises(ArtefactError) as e:
            check_same_training("d.json: design", theirs, run, fix="pass --model RUN")
        msg = str(e.value)
        assert len(msg.splitlines()) == 1
        assert msg.startswith(f"d.json: design is for model {theirs!r}, but the run ")
        assert f"the run {run.path} is {mine!r}" in msg and msg.endswith("; pass --model RUN")


def test_a_model_id_at_hand_is_named_by_its_holder() -> None:
    with pytest.raises(ArtefactError) as e:
        check_same_training("t.csv: table", "net-aaaa", "net-bbbb", holder="its file name", fix="f")
    assert str(e.value) == (
        "t.csv: table is for model 'net-aaaa', but its file name is 'net-bbbb'; f"
    )


def test_write_table_refuses_a_sidecar_of_another_model_or_device(
    tiny_run: Path, tmp_path: Path, write_fake_table: Any
) -> None:
    from hapi_dse.profiling.table import read_table, write_table

    mine = RunDir(tiny_run).model_id
    rows = read_table(write_fake_table(tiny_run, tmp_path / "made", "dev")).rows
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    theirs = _another(mine)
    with pytest.raises(ArtefactError) as e:
        write_table(rows, {"model_id": theirs}, device="dev", model_id=mine, profiles=profiles)
    assert repr(theirs) in str(e.value) and repr(mine) in str(e.value)
    with pytest.raises(ArtefactError, match="sidecar says device 'other', not 'dev'"):
        write_table(rows, {"device": "other"}, device="dev", model_id=mine, profiles=profiles)
    assert _files(profiles) == {}
    written = write_table(rows, {"model_id": mine}, device="dev", model_id=mine, profiles=profiles)
    assert read_table(written).model_id == mine


def test_plot_draws_no_reference_points_from_another_training(
    tiny_run: Path, tmp_path: Path, write_fake_table: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import pandas as pd

    from hapi_dse.plotting import load_references
    from hapi_dse.plotting.info import ResultSet

    run = RunDir(tiny_run)
    profiles = tmp_path / "profiles"
    write_fake_table(tiny_run, profiles, "dev")

    def result(model_id: str) -> ResultSet:
        return ResultSet(tmp_path / model_id, "dev", model_id, pd.DataFrame(), {}, None)

    args = (str(tiny_run), str(profiles), "latency_ms", "accuracy")
    mine = load_references([result(run.model_id)], *args)
    assert mine[("dev", run.model_id)]  # the run's own results get reference points
    theirs = _another(run.model_id)
    with caplog.at_level(logging.WARNING, logger="hapi_dse.plotting.figures"):
        refused = load_references([result(theirs)], *args)
    assert refused == {("dev", theirs): []}
    (line,) = [r.getMessage() for r in caplog.records if "no reference points" in r.getMessage()]
    assert repr(theirs) in line and repr(run.model_id) in line and str(run.path) in line
