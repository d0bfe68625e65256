"""A table in ./profiles (or --profiles) shadows the installed one: hapi says which (#23.3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hapi_dse.paths import SHIPPED_PROFILES
from hapi_dse.run import bundled_example


def _shadow(profiles: Path) -> tuple[Path, Path]:
    mid = json.loads((bundled_example() / "model.json").read_text())["model_id"]
    shipped = SHIPPED_PROFILES / "pixel6" / f"{mid}.csv"
    mine = profiles / "pixel6" / shipped.name
    mine.parent.mkdir(parents=True)
    shutil.copy(shipped, mine)
    shutil.copy(shipped.with_suffix(".json"), mine.with_suffix(".json"))
    return shipped, mine


def test_devices_marks_the_shadowed_table(run_cli, tmp_path: Path) -> None:
    shipped, mine = _shadow(tmp_path / "profiles")
    res = run_cli("devices", "--profiles", tmp_path / "profiles")
    assert res.exit_code == 0, res.stderr
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("pixel6 ")]
    used = [ln for ln in rows if ln.endswith(str(mine))]
    unused = [ln for ln in rows if f"{shipped} (unused: {mine})" in ln]
    assert len(used) == 1 and "(shadowed)" not in used[0], rows
    assert len(unused) == 1 and "(shadowed)" in unused[0], rows


def test_a_search_says_which_table_it_used(run_cli, tmp_path: Path) -> None:
    _, mine = _shadow(tmp_path / "profiles")
    out = tmp_path / "out"
    res = run_cli(
        "search", "--device", "pixel6", "--profiles", tmp_path / "profiles", "--trials", "10",
        "--out", out,
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert str(mine) in res.stdout.splitlines()[0] or str(mine) in res.stdout
    info = json.loads((out / "pixel6" / "search.json").read_text())
    assert info["table_path"] == str(mine) and info["table_source"] == "modelled"
