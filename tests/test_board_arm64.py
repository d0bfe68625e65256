"""The README's board recipe on a real board architecture: ``scripts/board_check.sh`` runs the
wheel's base install (no torch, no optuna) in an arm64 Debian userland under qemu-user
emulation (``make board-check``): ``hapi calibrate --measure``, ``hapi profile --onnx-dir``,
``hapi devices`` and ``hapi eval`` there, ``hapi import-profile``, ``hapi search`` and
``hapi export`` at home. Functional only: timings under emulation mean nothing and nothing
here reads them. Needs root and a Debian host; the rootfs and pip's cache are kept in
``$BOARD_ROOT`` (default ``~/.cache/hapi-board-arm64``): about 25 minutes cold (4 of them
the debootstrap), 20 warm on 2 cores (the board's profile under emulation: 16). Marked
slow."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hapi_dse.profiling.table import load_table

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "board_check.sh"

pytestmark = pytest.mark.slow


def _why_not() -> str | None:
    """Why this machine cannot run the check, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (apt-get, debootstrap, chroot and mounts)"
    debian = Path("/etc/debian_version").is_file() and shutil.which("apt-get") is not None
    if not debian and shutil.which("debootstrap") is None:
        return "needs a Debian host (apt-get) or debootstrap"
    return None


def test_the_board_recipe_runs_on_arm64(tmp_path: Path) -> None:
    why = _why_not()
    if why:
        pytest.skip(why)
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k not in ("HAPI_PROFILES", "PYTHONPATH")}
    env.update(BOARD_WORK=str(work), PYTHON=sys.executable, HAPI_NO_PROGRESS="1")
    res = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=5400
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.splitlines()[-1] == "board-check: ok (aarch64)"
    assert (work / "board-machine.txt").read_text().strip() == "aarch64"

    # the board's table, imported at home: one row per segment, all timed there
    man = json.loads((work / "segments" / "segments.json").read_text())
    segments = [s for s in man["segments"] if s["kind"] in ("block", "head", "final")]
    table = load_table("arm64-board", man["model_id"], work / "home-profiles")
    assert len(table.rows) == len(segments)
    assert table.num_blocks == sum(s["kind"] == "block" for s in segments)
    assert set(table.rows["source"]) == {"measured"}
    assert table.sidecar["device"] == "arm64-board"

    # the design searched with it, evaluated on the board
    report = json.loads((work / "eval.json").read_text())
    assert report["n"] == sum(report["measured"]["exit_histogram"]) > 0

    # 'hapi calibrate': the kit timed on the board, a row per graph (when the checkout has it)
    kit = sorted((work / "kit").glob("*.onnx"))
    if "hapi calibrate not available" in res.stderr:
        assert not kit
    else:
        with open(work / "kit" / "measured.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(kit) > 0
