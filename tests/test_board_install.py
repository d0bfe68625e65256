"""The README's board recipe, for real: the wheel's base install in a fresh virtual
environment (no torch, no optuna) profiles segments that the full install exported, lists
its devices, and names the extra a training needs; the table it writes comes home with
``hapi import-profile`` (#12). Minutes of work (an export with its deployment probes, a venv,
a pip install from the package registry): marked slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hapi_dse.profiling.table import load_table

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(argv: list[str | Path], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HAPI_PROFILES", "PYTHONPATH")}
    env["HAPI_NO_PROGRESS"] = "1"
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def _ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_the_base_install_profiles_a_board(tiny_run: Path, tmp_path: Path) -> None:
    home = [sys.executable, "-m", "hapi_dse"]  # the full install (this checkout)
    # on the workstation: the segments of a run, and hapi's wheel
    seg = tmp_path / "segments"
    _ok(_run([*home, "-q", "profile", "--model", tiny_run, "--export-dir", seg, "--export-only"],
             tmp_path))  # fmt: skip
    _ok(_run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
              "-w", tmp_path / "dist", ROOT], tmp_path))  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("hapi_dse-*.whl")

    # on the board: a fresh venv and the README's one pip command
    board = tmp_path / "board"
    board.mkdir()
    venv = board / "venv"
    _ok(_run([sys.executable, "-m", "venv", venv], board))
    py, hapi = venv / "bin" / "python", venv / "bin" / "hapi"
    _ok(_run([py, "-m", "pip", "install", "-q", wheel], board))
    where = _ok(_run([py, "-c", "import hapi_dse, importlib.util as u; print(hapi_dse.__file__); "
                                "print([m for m in ('torch', 'optuna') if u.find_spec(m)])"],
                     board)).splitlines()  # fmt: skip
    assert where[0].startswith(str(venv)) and where[1] == "[]"

    _ok(_run([hapi, "-q", "profile", "--onnx-dir", seg, "--device", "test-board", "--profiles",
              "out", "--runs", "50", "--warmup", "1"], board))  # fmt: skip
    listing = _ok(_run([hapi, "devices", "--check", "--profiles", "out"], board)).splitlines()
    assert [line.split()[:2] for line in listing if line.startswith("test-board")] == [
        ["test-board", "measured"]
    ]
    assert any(line.startswith("pixel6 ") for line in listing)  # shipped in the wheel
    res = _run([hapi, "train", "--dataset", "digits", "--out", "run"], board)
    assert res.returncode == 2
    assert res.stderr == (
        "hapi: error: 'hapi train' needs torch, which is not installed here: "
        "pip install 'hapi-dse[train]'\n"
    )
    assert not (board / "run").exists()

    # back home: one command brings the table in
    model_id = json.loads((seg / "segments.json").read_text())["model_id"]
    _ok(_run([*home, "import-profile", board / "out" / "test-board" / f"{model_id}.csv",
              "--profiles", tmp_path / "profiles"], tmp_path))  # fmt: skip
    table = load_table("test-board", model_id, tmp_path / "profiles")
    man = json.loads((seg / "segments.json").read_text())
    assert table.num_blocks == sum(s["kind"] == "block" for s in man["segments"])
    assert set(table.rows["source"]) == {"measured"} and (table.rows["latency_ms"] > 0).all()
    assert table.sidecar["deployment"]["source"] == "measured"  # the probes were timed there
