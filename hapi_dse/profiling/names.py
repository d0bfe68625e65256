"""Plain names for devices and model ids, and where their profile table lives.

A device name and a ``model_id`` each become one path component (``DEVICE/MODEL_ID.csv``);
one read from a file must never name a path outside the profiles directory, so every name
is checked here before it is joined to a path. Standard library only.
"""

from __future__ import annotations

from pathlib import Path

from hapi_dse.errors import ArtefactError
from hapi_dse.paths import SPECS_SUBDIR

#: The plain-name rule. ``hapi_dse/deploy/staged_runtime.py`` (shipped inside an export, so
#: it cannot import hapi) has a copy of it and of :func:`valid_name`;
#: tests/test_plain_names.py holds the two copies to the same answers.
NAME_RULE = "letters, digits, '-', '_' or '.', not starting with '.'"


def valid_name(name: str) -> bool:
    """A name that is safe as one path component: letters, digits, ``-``, ``_``, ``.``, not
    starting with ``.`` (so never ``.``, ``..``, a hidden file or a path)."""
    return (
        isinstance(name, str)
        and bool(name)
        and not name.startswith(".")
        and all((c.isascii() and c.isalnum()) or c in "-_." for c in name)
    )


def valid_device_name(name: str) -> bool:
    """A plain name (:func:`valid_name`) that is not the spec directory's."""
    return valid_name(name) and name != SPECS_SUBDIR


def check_name(what: str, name: str) -> str:
    """``name`` if it is a plain name (:func:`valid_name`), else :class:`ArtefactError`."""
    if not valid_name(name):
        raise ArtefactError(f"{what} {name!r}: expected a plain name ({NAME_RULE})")
    return name


def table_path(root: str | Path, device: str, model_id: str) -> Path:
    """``ROOT/DEVICE/MODEL_ID.csv``; refuses a device or model id that is not a plain name
    (one from a file could otherwise name a path outside ``root``)."""
    check_name("device", device)
    check_name("model_id", model_id)
    return Path(root) / device / f"{model_id}.csv"


def sidecar_path(csv_path: Path) -> Path:
    """The JSON sidecar beside a table: ``DEVICE/MODEL_ID.json``."""
    return csv_path.with_suffix(".json")
