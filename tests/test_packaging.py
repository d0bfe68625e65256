"""The wheel ships the bundled example, the shipped devices' tables and specs and the search
spaces, never a table measured on the machine that built it (profiles/host, #12)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contents(tmp_path: Path) -> None:
    host = ROOT / "profiles" / "host"
    host.mkdir(parents=True, exist_ok=True)
    probe = host / "zz-packaging-probe.csv"  # a measured table as 'hapi profile' leaves one
    existed = probe.exists()
    probe.write_text("segment\n")
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
             "-w", str(tmp_path), str(ROOT)],
            check=True, capture_output=True, cwd=tmp_path,
        )  # fmt: skip
    finally:
        if not existed:
            probe.unlink()
    (wheel,) = tmp_path.glob("hapi_dse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.split("/")[2] for n in names if n.startswith("hapi_dse/shipped_profiles/")}
    assert shipped == {"jetson-nano", "pixel6", "raspberry-pi-4", "specs"}
    assert not [n for n in names if "/host" in n or "host.toml" in n]
    assert "hapi_dse/examples/fashion-mnist/weights.pt" in names
    assert {"hapi_dse/shipped_search_spaces/default.toml", "hapi_dse/api.py"} <= set(names)
