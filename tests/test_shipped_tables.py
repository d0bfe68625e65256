"""The shipped modelled tables are what the README's command writes (#23.3): `hapi profile
--device D --modelled` on the bundled example gives each shipped device's table row for row,
so a user's ./profiles copy and the shipped one never disagree (nor pick differently)."""

from __future__ import annotations

import pandas as pd
import pytest

import hapi_dse.api as hapi
from hapi_dse.paths import SHIPPED_PROFILES
from hapi_dse.readers import read_json

#: pixel6 in every run (the README's device); the others with the slow tests (an export each)
DEVICES = [
    "pixel6",
    *(
        pytest.param(d, marks=pytest.mark.slow)
        for d in ("raspberry-pi-4", "jetson-nano", "jetson-nano-gpu")
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_the_readme_command_reproduces_the_shipped_table(tmp_path, device: str) -> None:
    run = hapi.load_run()
    made = hapi.profile(run, device, modelled=True, out=tmp_path)
    shipped = SHIPPED_PROFILES / device / f"{run.model_id}.csv"
    mine = pd.read_csv(made.path).sort_values(["segment", "position", "head"])
    theirs = pd.read_csv(shipped).sort_values(["segment", "position", "head"])
    pd.testing.assert_frame_equal(mine.reset_index(drop=True), theirs.reset_index(drop=True))
    a, b = read_json(made.path.with_suffix(".json")), read_json(shipped.with_suffix(".json"))
    assert set(a) == set(b)  # the same deployment terms (no graph_entry_ms on one side only)
    for key in ("call_overhead_ms", "segments_sum_ms"):
        assert a.get(key) == b.get(key), key
    assert {**a["spec"], "path": None} == {**b["spec"], "path": None}  # where it was read
