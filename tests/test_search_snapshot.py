"""A fixed-seed search of the bundled example writes exactly what it wrote when the snapshot
was taken (scripts/search_snapshot.py): refactors keep trials, Pareto fronts and picks."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def snap(load_script: Callable[[str], ModuleType]) -> ModuleType:
    return load_script("search_snapshot")


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
