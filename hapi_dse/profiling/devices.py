"""Finding devices and tables on the profile search path (``hapi devices``, ``--device``).

The search path is ``--profiles DIR``, ``$HAPI_PROFILES``, ``./profiles``, then the copy
installed with the package (:func:`hapi_dse.paths.profile_search_path`); a device is known
when it has a table directory or a spec file ``specs/DEVICE.toml`` there. Nothing is loaded
or validated here (:mod:`hapi_dse.profiling.table` does that).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hapi_dse.errors import ArtefactError, unknown_name
from hapi_dse.paths import SPECS_SUBDIR, profile_search_path
from hapi_dse.profiling.names import sidecar_path, table_path


@dataclass(frozen=True)
class TableInfo:
    """A table found on the search path (for ``hapi devices``)."""

    device: str
    model_id: str
    path: Path
    source: str
    date: str


def known_devices(profiles: str | Path | None = None) -> dict[str, list[Path]]:
    """Every device with a table directory or a spec file, and where (search-path order)."""
    out: dict[str, list[Path]] = {}
    for root in profile_search_path(profiles):
        for child in sorted(root.iterdir()):
            if child.is_dir() and child.name != SPECS_SUBDIR and not child.name.startswith("."):
                out.setdefault(child.name, []).append(child)
        specs = root / SPECS_SUBDIR
        if specs.is_dir():
            for spec in sorted(specs.glob("*.toml")):
                out.setdefault(spec.stem, []).append(spec)
    return out


def list_tables(profiles: str | Path | None = None) -> list[TableInfo]:
    """Every table on the search path; one shadowed by an earlier directory is left out."""
    seen: set[tuple[str, str]] = set()
    out: list[TableInfo] = []
    for root in profile_search_path(profiles):
        for csv_path in sorted(root.glob("*/*.csv")):
            device, model_id = csv_path.parent.name, csv_path.stem
            if device == SPECS_SUBDIR or (device, model_id) in seen:
                continue
            seen.add((device, model_id))
            try:
                side = json.loads(sidecar_path(csv_path).read_text())
            except (OSError, ValueError):
                side = {}
            if not isinstance(side, dict):  # listed as unknown; 'hapi devices --check' refuses it
                side = {}
            out.append(
                TableInfo(
                    device,
                    model_id,
                    csv_path,
                    str(side.get("source", "?")),
                    str(side.get("date", "?")),
                )
            )
    return out


def find_table(device: str, model_id: str, profiles: str | Path | None = None) -> Path:
    devices = known_devices(profiles)
    if device not in devices:
        raise unknown_name("device", device, devices)
    for root in profile_search_path(profiles):
        p = table_path(root, device, model_id)
        if p.is_file():
            return p
    have = sorted(
        {p.stem for root in profile_search_path(profiles) for p in (root / device).glob("*.csv")}
    )
    has_spec = any(p.suffix == ".toml" for p in devices[device])
    make = f"'hapi profile --device {device} --model RUN'"
    if has_spec:
        make += f" (or add --modelled for a table from {device}'s spec)"
    where = ", ".join(str(p) for p in profile_search_path(profiles))
    raise ArtefactError(
        f"no profile table for model {model_id} on device {device!r} (looked in {where}); "
        f"tables there are for: {', '.join(have) or 'no model'}; make one with {make}"
    )
