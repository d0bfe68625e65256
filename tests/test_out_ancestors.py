"""``hapi search --out`` names a folder the search writes ``DEVICE/`` folders into; the
current directory, one above it and ``/`` are refused in one line before any search, as the
README says (#22 class 3: ``cd sub && hapi search --out ..`` was accepted)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.mark.parametrize("out", [".", "..", "/", "../.."])
def test_search_refuses_the_current_directory_and_those_above(run_cli, tmp_path, out) -> None:
    sub = tmp_path / "a" / "sub"
    sub.mkdir(parents=True)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    cwd = os.getcwd()
    os.chdir(sub)
    try:
        res = run_cli("search", "--device", "pixel6", "--trials", "30", "--out", out)
    finally:
        os.chdir(cwd)
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "the current directory" in res.stderr or "above the current one" in res.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert not Path(sub, "pixel6").exists()
