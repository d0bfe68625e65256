"""Without torch or optuna (a board that only profiles), a command that needs one says so in
one line with exit status 2, instead of a traceback (#12); the board's commands still run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUN = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # 'import torch' now fails as on a machine without it
from hapi_dse.cli import main
main(sys.argv[2:])
"""


def _hapi(blocked: str, *args: object) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", RUN, blocked, *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, package",
    [
        (["train", "--dataset", "digits", "--out", "OUT"], "torch"),
        (["search", "--device", "pixel6", "--trials", "5", "--out", "OUT"], "optuna"),
    ],
)
def test_a_missing_package_is_one_line(tmp_path: Path, args: list[str], package: str) -> None:
    res = _hapi("torch,optuna", *[tmp_path / "out" if a == "OUT" else a for a in args])
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (
        f"hapi: error: 'hapi {args[0]}' needs the Python package {package!r}, which is not "
        "installed here; install hapi with its dependencies, or see the README (Profiling on "
        "a board) for what runs without torch and optuna"
    )
    assert not (tmp_path / "out").exists()


def test_devices_runs_without_torch_and_optuna() -> None:
    res = _hapi("torch,optuna", "devices")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].split()[:2] == ["DEVICE", "SOURCE"]
    assert "pixel6" in res.stdout
