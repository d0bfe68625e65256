"""The wheel's one build rule that setup.cfg cannot state (metadata, dependencies and package
data are in setup.cfg): of ``hapi_dse/shipped_profiles`` only the shipped devices' specs,
their tables of the bundled example and the published latencies the specs are checked
against ship, so that a table written there for another model or
device (by hand, or ``--profiles hapi_dse/shipped_profiles``) never ends up in the wheel; the
user's own tables go to ``./profiles``, outside the package. The example's
``model_id`` is read from its ``model.json``: ``make example`` needs no edit here.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePath

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
EXAMPLE_MODEL = HERE / "hapi_dse" / "examples" / "fashion-mnist" / "model.json"
#: the devices modelled from a shipped spec (DESIGN 2.2); the Makefile's SHIPPED_DEVICES
SHIPPED_DEVICES = ("pixel6", "raspberry-pi-4", "jetson-nano", "jetson-nano-gpu")
#: files beside the specs: the published latencies the specs are checked against
SHIPPED_FILES = {("published.toml",), ("specs", "DATASHEETS.md")}


def ships(path: str, model_id: str) -> bool:
    """Whether a data file of the package goes into the wheel."""
    parts = PurePath(path).parts
    if "shipped_profiles" not in parts:
        return True
    rel = parts[parts.index("shipped_profiles") + 1 :]
    if tuple(rel) in SHIPPED_FILES:
        return True
    if len(rel) != 2:
        return False
    folder, name = rel[0], PurePath(rel[1])
    if folder == "specs":
        return name.suffix == ".toml" and name.stem in SHIPPED_DEVICES
    return folder in SHIPPED_DEVICES and name.stem == model_id


class BuildPy(build_py):
    def find_data_files(self, package: str, src_dir: str) -> list[str]:
        files = super().find_data_files(package, src_dir)
        if package != "hapi_dse":
            return files
        model_id = json.loads(EXAMPLE_MODEL.read_text())["model_id"]
        return [f for f in files if ships(f, model_id)]


setup(cmdclass={"build_py": BuildPy})
