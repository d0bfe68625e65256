"""The search's console summary explains its table and says when an SLO shaped nothing (#12)."""

from __future__ import annotations

from pathlib import Path

from hapi_dse.search.console import LEGEND

SEARCH = ["search", "--device", "pixel6", "--trials", "60", "--seed", "3"]


def test_an_slo_every_trial_meets_is_called_out(run_cli, tmp_path: Path) -> None:
    res = run_cli(*SEARCH, "--slo", "latency=50ms", "--out", tmp_path / "a")
    assert res.exit_code == 0, res.stderr
    notes = [line for line in res.stdout.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and notes[0].startswith(
        "note: latency=50ms binds no design: all 60 trials meet it (the highest latency_ms is 0."
    )
    assert LEGEND in res.stdout.splitlines()


def test_a_binding_slo_gets_no_note(run_cli, tmp_path: Path) -> None:
    res = run_cli(*SEARCH, "--slo", "latency=0.3ms", "--slo", "accuracy=50%", "--out", tmp_path)
    assert res.exit_code == 0, res.stderr
    notes = [line for line in res.stdout.splitlines() if line.startswith("note: ")]
    # the latency bound rules trials out; the 50 % accuracy floor binds none
    assert len(notes) == 1 and notes[0].startswith("note: accuracy=50% binds no design")
    assert "(the lowest accuracy is " in notes[0]
