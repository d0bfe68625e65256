"""Bringing tables measured on a board home: ``hapi import-profile`` (DESIGN 2.2, 3).

A board runs ``hapi profile --onnx-dir SEG --device NAME --profiles out``, which writes
``out/NAME/MODEL_ID.csv`` and its JSON sidecar. :func:`import_tables` checks each pair as
every reader does (columns, rows, sidecar), takes the device from the sidecar and the model
id from the file name (the sidecar must say the same), and installs both files into
``PROFILES/DEVICE/``: the table byte for byte, the sidecar with an ``imported`` record (the
provenance of the import: the sha256 of both files brought in, when, by which command).

Every table is checked, and every destination found free (or ``overwrite`` given), before
anything is written; each pair is written atomically, as ``hapi profile`` writes its own.
Pandas is not needed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hapi_dse.errors import ArtefactError, HapiError, UsageError
from hapi_dse.paths import default_profiles_out
from hapi_dse.profiling.names import NAME_RULE, sidecar_path, table_path, valid_device_name
from hapi_dse.profiling.table import check_table
from hapi_dse.readers import loads_json, read_json

__all__ = ["ImportedTable", "import_tables"]

_FIX = "copy the csv and its json sidecar from the board's --profiles directory as it wrote them"


@dataclass(frozen=True)
class ImportedTable:
    """A table installed at ``path`` (its sidecar beside it)."""

    device: str
    model_id: str
    source: str  # measured / modelled
    path: Path
    replaced: bool

    def summary(self) -> str:
        how = ", replacing the previous one" if self.replaced else ""
        return f"{self.source} table of {self.model_id} on {self.device} -> {self.path}{how}"


@dataclass(frozen=True)
class _Checked:
    csv: Path
    device: str
    model_id: str
    source: str
    sidecar: dict[str, Any]
    dest: Path


def table_files(paths: Sequence[str | Path]) -> list[Path]:
    """The ``.csv`` files named, a directory standing for the tables in it."""
    if not paths:
        raise UsageError("name a table to import: a board's PROFILES/DEVICE/MODEL_ID.csv")
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.csv"))
            if not found:
                raise UsageError(f"{p}: no table (*.csv) in this directory")
            out += found
        elif not p.exists():
            raise UsageError(f"{p}: no such file")
        elif p.suffix != ".csv":
            raise UsageError(f"{p}: expected a profile table MODEL_ID.csv (its .json beside it)")
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def _sidecar_device(csv: Path) -> str | None:
    """The device the sidecar names (``None`` when the sidecar is unreadable: the full check
    then says why)."""
    side_path = sidecar_path(csv)
    try:
        side = read_json(side_path)
    except HapiError:
        return None
    if not isinstance(side, dict):
        return None
    device = side.get("device")
    if device is None:
        raise ArtefactError(f"{side_path}: names no device; {_FIX}")
    if not isinstance(device, str) or not valid_device_name(device):
        raise ArtefactError(
            f"{side_path}: device {device!r} is not a plain name ({NAME_RULE}); {_FIX}"
        )
    return device


def _check(csv: Path, root: Path) -> _Checked:
    device = _sidecar_device(csv)
    rows, side = check_table(csv, model_id=csv.stem, device=device)
    sources = {r["source"] for r in rows}
    if len(sources) != 1:
        raise ArtefactError(f"{csv}: mixed sources {sorted(sources)} in one table")
    source = sources.pop()
    if side.get("source", source) != source:
        raise ArtefactError(
            f"{csv}: its rows are {source} but its sidecar says {side['source']}; {_FIX}"
        )
    device = str(side["device"])
    return _Checked(csv, device, csv.stem, source, side, table_path(root, device, csv.stem))


def import_tables(
    paths: Sequence[str | Path], profiles: str | Path | None = None, *, overwrite: bool = False
) -> list[ImportedTable]:
    """Check the tables at ``paths`` (files or directories of them) and install each into
    ``profiles`` (default ``./profiles``) under the device its sidecar names.

    An installed table of the same device and model is replaced only with ``overwrite``;
    nothing is written unless every table passes and every destination may be written.
    """
    root = default_profiles_out(profiles)
    checked = [_check(p, root) for p in table_files(paths)]
    seen: dict[Path, Path] = {}
    for c in checked:
        if c.dest in seen:
            raise UsageError(
                f"{seen[c.dest]} and {c.csv} are both tables of {c.model_id} on {c.device}: "
                "import one of them"
            )
        seen[c.dest] = c.csv
        if c.dest.exists() and c.dest.resolve() == c.csv.resolve():
            raise UsageError(f"{c.csv} is already installed there (--profiles {root})")
        if not overwrite and (c.dest.exists() or sidecar_path(c.dest).exists()):
            raise ArtefactError(
                f"{c.dest} exists (a table of {c.model_id} on {c.device}); pass --overwrite to "
                "replace it, or --profiles OTHER_DIR to keep it"
            )
    return [_install(c, overwrite) for c in checked]


def _install(c: _Checked, overwrite: bool) -> ImportedTable:
    from hapi_dse.atomic import atomic_path
    from hapi_dse.profiling.table_format import validate_sidecar
    from hapi_dse.provenance import provenance

    replaced = c.dest.exists()
    side_src = sidecar_path(c.csv)
    side = {
        **c.sidecar,
        "imported": provenance(
            seed=None,
            inputs={"table": c.csv, "sidecar": side_src},
            settings={"profiles": str(c.dest.parent.parent), "overwrite": overwrite},
            libraries=(),
        ),
    }
    text = json.dumps(side, indent=2) + "\n"
    json_dest = sidecar_path(c.dest)
    validate_sidecar(loads_json(text, json_dest), str(json_dest))
    data = c.csv.read_bytes()
    with atomic_path(c.dest) as tmp_csv, atomic_path(json_dest) as tmp_json:
        tmp_csv.write_bytes(data)
        tmp_json.write_text(text)
        # both temps are complete; the two renames follow back to back (json first)
    return ImportedTable(c.device, c.model_id, c.source, c.dest, replaced)
