"""A fixed-seed search of the bundled example writes exactly what it wrote when the snapshot
was taken (scripts/search_snapshot.py): refactors keep trials, Pareto fronts and picks."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "search_snapshot.py"


@pytest.fixture(scope="module")
def snap():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("search_snapshot", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fixed_seed_searches_match_the_snapshot(snap) -> None:  # type: ignore[no-untyped-def]
    recorded = json.loads(snap.SNAPSHOT.read_text())
    now = snap.run_all()
    diffs = snap.differences(now, recorded)
    assert not diffs, "\n".join(diffs[:20])
    # the snapshot is not vacuous: every case wrote trials, a front and a chosen trial
    for case in recorded.values():
        for dev in case.values():
            assert len(dev["trials"]) >= 80 and dev["pareto"]
            assert isinstance(dev["design"]["trial"], int)


def test_comparison_catches_a_changed_trial(snap) -> None:  # type: ignore[no-untyped-def]
    recorded = json.loads(snap.SNAPSHOT.read_text())
    changed = copy.deepcopy(recorded)
    row = changed["nsga2-slo"]["pixel6"]["trials"][7]
    row["latency_ms"] = str(float(row["latency_ms"]) * (1 + 1e-6))
    changed["nsga2-slo"]["pixel6"]["design"]["trial"] += 1
    diffs = snap.differences(changed, recorded)
    assert len(diffs) == 2
    assert any("trials[7].latency_ms" in d for d in diffs)
    assert snap.differences(recorded, copy.deepcopy(recorded)) == []
