"""The wheel ships the bundled example, the shipped devices' specs and their tables of the
bundled example, and the search spaces; never a table measured on the machine that built it
(profiles/host), nor a table of another model or device made in the checkout (#12). The
extras of setup.cfg are the ones the CLI names when a package is missing."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from hapi_dse.cli import BASE_PACKAGES, EXTRAS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_ID = json.loads((ROOT / "hapi_dse/examples/fashion-mnist/model.json").read_text())[
    "model_id"
]


def test_wheel_contents(tmp_path: Path) -> None:
    # a copy of the checkout (never this one: others read its tables meanwhile), with tables
    # and specs for other machines and models put among the shipped ones
    src = tmp_path / "src"
    patterns = shutil.ignore_patterns(".*", "build", "dist", "runs", "*.egg-info", "__pycache__")

    def skip(d: str, names: list[str]) -> set[str]:  # hidden files but hapi's manifests
        return patterns(d, names) - {".hapi_files.json"}

    src.mkdir()
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("hapi_dse", "search_spaces"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=skip)
    for probe in [
        "host/zz-packaging-probe.csv",  # measured on the machine that builds the wheel
        f"host/{EXAMPLE_ID}.csv",
        f"zz-board/{EXAMPLE_ID}.csv",  # a board's table brought home
        "pixel6/zz-other-model.csv",  # another model on a shipped device
        "specs/zz-board.toml",
    ]:
        path = src / "hapi_dse" / "shipped_profiles" / probe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("segment\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(src)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("hapi_dse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(
        n.removeprefix("hapi_dse/shipped_profiles/")
        for n in names
        if n.startswith("hapi_dse/shipped_profiles/")
    )
    devices = ("jetson-nano", "jetson-nano-gpu", "pixel6", "raspberry-pi-4")
    assert shipped == sorted(
        [f"{d}/{EXAMPLE_ID}.{ext}" for d in devices for ext in ("csv", "json")]
        + [f"specs/{d}.toml" for d in devices]
        + ["published.toml", "specs/DATASHEETS.md"]
    )
    assert "hapi_dse/examples/fashion-mnist/weights.pt" in names
    # the example's manifest: an installed example is hapi's own run ('make example')
    assert "hapi_dse/examples/fashion-mnist/.hapi_files.json" in names
    assert {"hapi_dse/shipped_search_spaces/default.toml", "hapi_dse/api.py"} <= set(names)
    # PEP 561: type checkers read an installed hapi's annotations
    assert "hapi_dse/py.typed" in names


def _names(requirements: str) -> list[str]:
    """Distribution names of a setup.cfg requirement list (comments and blank lines out)."""
    lines = [ln.split("#")[0].strip() for ln in requirements.splitlines()]
    return [re.split(r"[\s<>=!~;\[]", ln)[0] for ln in lines if ln]


def test_the_cli_names_the_extras_of_setup_cfg() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extras = cfg["options.extras_require"]
    declared = {
        (dist, extra)
        for extra in extras
        if extra not in ("all", "dev")
        for dist in _names(extras[extra])
    }
    assert declared == set(EXTRAS.values())
    assert set(_names(cfg["options"]["install_requires"])) == BASE_PACKAGES
    assert _names(extras["all"]) == ["hapi-dse"] and "[train,search]" in extras["all"]
    # neither torch nor optuna in the base install: a board needs neither
    assert not {"torch", "optuna"} & BASE_PACKAGES
