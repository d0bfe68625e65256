"""The search's console summary explains its table and says when an SLO shaped nothing (#12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hapi_dse.search.console import LEGEND
from hapi_dse.testing import search_args

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


def test_a_chosen_design_below_the_backbone_on_test_is_flagged(run_cli, tmp_path: Path) -> None:
    """Synthetic statistics whose exits are right on val but mostly wrong on test (the
    final classifier unchanged): the fastest design looks fine on val and loses to the
    plain backbone on test. The console row, the summary, pareto.csv and design.json say so,
    and pareto.csv flags exactly the designs whose test split loses clearly more to the
    backbone than val showed."""
    import csv
    import json

    import numpy as np

    from hapi_dse.exit_stats import ExitStats
    from hapi_dse.search.picking import SHORTFALL_MARGIN_PP
    from hapi_dse.testing import write_synthetic_run, write_synthetic_table

    run = write_synthetic_run(tmp_path / "run", n_val=400, n_test=400, num_blocks=6)
    test = ExitStats.load(run / "exits_test.npz")
    pred = test.prediction.copy()
    exits = np.arange(test.k) < test.k - 1  # every column but the final classifier
    wrong = (test.labels.astype(np.int64) + 1) % 10
    pred[: len(pred) * 3 // 4, exits] = wrong[: len(pred) * 3 // 4, None]
    ExitStats(test.labels, test.confidence, test.entropy, pred, test.position, test.head).save(
        run / "exits_test.npz"
    )
    write_synthetic_table(run, "devA", tmp_path / "profiles")
    out = tmp_path / "out"
    res = run_cli(
        *search_args(run, tmp_path / "profiles", out, "--pick", "latency", trials=80, seed=1)
    )
    assert res.exit_code == 0, res.stderr
    design = json.loads((out / "devA" / "design.json").read_text())
    backbone = design["backbone_predicted"]
    gap = 100 * (backbone["test"]["accuracy"] - design["predicted_test"]["accuracy"])
    val_gap = 100 * (backbone["val"]["accuracy"] - design["predicted_val"]["accuracy"])
    assert gap - max(val_gap, 0) > SHORTFALL_MARGIN_PP and design["test_below_backbone"] is True
    assert design["test_below_backbone_pp"] == pytest.approx(gap)
    assert design["val_below_backbone_pp"] == pytest.approx(val_gap)
    with open(out / "devA" / "pareto.csv", newline="") as f:
        pareto = list(csv.DictReader(f))
    for p in pareto:
        t = 100 * (backbone["test"]["accuracy"] - float(p["test_accuracy"]))
        v = 100 * (backbone["val"]["accuracy"] - float(p["accuracy"]))
        assert float(p["test_below_backbone_pp"]) == pytest.approx(t)
        assert p["test_below_backbone"] == str(t > 0 and t - max(v, 0) > SHORTFALL_MARGIN_PP)
    row = next(ln for ln in res.stdout.splitlines() if ln.startswith(f"{design['trial']}*"))
    assert row.endswith(f"{gap:.2f}pp below backbone (val {val_gap:.2f})") and " ok" not in row
    warning = f"is {gap:.2f} pp below the plain backbone's {100 * backbone['test']['accuracy']:.2f}"
    assert any(ln.startswith("warning: on the test split its accuracy") and warning in ln
               for ln in res.stdout.splitlines())  # fmt: skip


def test_losing_to_the_backbone_what_val_showed_is_not_flagged() -> None:
    """The accuracy a design trades for speed is the search's choice, not a surprise: only a
    test shortfall clearly beyond val's is flagged."""
    from hapi_dse.search.picking import Shortfall

    assert not Shortfall(val_pp=0.60, test_pp=0.52).flagged  # as val showed
    assert not Shortfall(val_pp=5.0, test_pp=5.6).flagged  # within the margin
    assert not Shortfall(val_pp=-0.3, test_pp=-0.1).flagged  # above the backbone
    assert Shortfall(val_pp=-0.1, test_pp=1.5).flagged  # val said no loss: test loses 1.5
    assert Shortfall(val_pp=2.0, test_pp=3.5).flagged
