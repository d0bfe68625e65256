"""Finding devices and tables on the profile search path (``hapi devices``, ``--device``).

The search path is ``--profiles DIR``, ``$HAPI_PROFILES``, ``./profiles``, then the copy
installed with the package (:func:`hapi_dse.paths.profile_search_path`); a device is known
when it has a table directory or a spec file ``specs/DEVICE.toml`` there. Finding loads and
validates nothing (:mod:`hapi_dse.profiling.table` does that, and :func:`check_devices`
for every table and spec at once); :func:`device_rows` and :func:`format_devices` are the
``hapi devices`` listing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hapi_dse.errors import ArtefactError, HapiError, unknown_name
from hapi_dse.paths import SPECS_SUBDIR, profile_search_path
from hapi_dse.profiling.names import sidecar_path, table_path
from hapi_dse.readers import read_json


@dataclass(frozen=True)
class TableInfo:
    """A table found on the search path (for ``hapi devices``)."""

    device: str
    model_id: str
    path: Path
    source: str
    date: str
    shadowed_by: Path | None = None  # the table of an earlier directory used instead


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


def list_tables(profiles: str | Path | None = None, *, shadowed: bool = False) -> list[TableInfo]:
    """Every table on the search path; one shadowed by the same device's and model's table
    in an earlier directory (which every command uses instead) is left out, or listed with
    ``shadowed_by`` set when ``shadowed``."""
    seen: dict[tuple[str, str], Path] = {}
    out: list[TableInfo] = []
    for root in profile_search_path(profiles):
        for csv_path in sorted(root.glob("*/*.csv")):
            device, model_id = csv_path.parent.name, csv_path.stem
            if device == SPECS_SUBDIR or ((device, model_id) in seen and not shadowed):
                continue
            winner = seen.setdefault((device, model_id), csv_path)
            try:
                side = read_json(sidecar_path(csv_path))
            except HapiError:  # listed as unknown; 'hapi devices --check' refuses it
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
                    None if winner == csv_path else winner,
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
    where = ", ".join(str(p) for p in profile_search_path(profiles))
    raise ArtefactError(
        f"no profile table for model {model_id} on device {device!r} (looked in {where}); "
        f"tables there are for: {', '.join(have) or 'no model'}; "
        + how_to_profile(device, has_spec=any(p.suffix == ".toml" for p in devices[device]))
    )


def how_to_profile(device: str, *, has_spec: bool) -> str:
    """How to make ``device``'s table: 'hapi profile' times the machine it runs on, so only
    ``host`` is measured here; another device is measured on itself or modelled."""
    if device == "host":
        return "measure this machine with 'hapi profile --device host --model RUN'"
    on_board = (
        f"measure it on the {device} itself: 'hapi profile --export-only --model RUN "
        f"--export-dir SEG' here, then 'hapi profile --device {device} --onnx-dir SEG' there "
        "and 'hapi import-profile' the table it writes here (README: Profiling on a board)"
    )
    if has_spec:
        return (
            f"model it from {device}'s spec with 'hapi profile --device {device} --modelled "
            f"--model RUN', or {on_board}"
        )
    return f"{on_board}; or write a device spec and add --modelled"


@dataclass(frozen=True)
class DeviceRow:
    """One line of ``hapi devices``: a table, a spec, or a device directory with neither."""

    device: str
    source: str  # measured / modelled (a table), spec, or - (an empty directory)
    model_id: str
    date: str  # to the second
    file: str
    error: str = "-"  # a spec's: "calibrated(fit=E%,graphs=N)" or "datasheet" (not calibrated)


#: The column titles of :func:`format_devices`.
DEVICE_COLUMNS = ("DEVICE", "SOURCE", "MODEL", "DATE", "ERROR", "FILE")


NO_DEVICES = (
    "no devices: no profile tables or specs on the search path "
    "(--profiles, $HAPI_PROFILES, ./profiles, the installed copy)"
)


def device_rows(profiles: str | Path | None = None) -> list[DeviceRow]:
    """Every known device's tables, then its spec, by device name (``hapi devices``)."""
    from hapi_dse.profiling.specs import spec_paths

    tables = list_tables(profiles, shadowed=True)
    specs = spec_paths(profiles)
    rows: list[DeviceRow] = []
    for name in sorted(known_devices(profiles)):
        mine = [t for t in tables if t.device == name]
        rows += [
            DeviceRow(
                name,
                t.source if t.shadowed_by is None else f"{t.source}(shadowed)",
                t.model_id,
                t.date[:19],
                str(t.path) if t.shadowed_by is None else f"{t.path} (unused: {t.shadowed_by})",
            )
            for t in mine
        ]
        if name in specs:
            rows.append(_spec_row(name, specs[name]))
        elif not mine:
            rows.append(DeviceRow(name, "-", "-", "-", "(empty directory)"))
    return rows


def _spec_row(name: str, path: Path) -> DeviceRow:
    """A spec's line: calibrated (``hapi calibrate --fit``: date and fit error) or not; a
    spec that does not parse is listed (``hapi devices --check`` refuses it)."""
    from hapi_dse.errors import HapiError
    from hapi_dse.profiling.specs import parse_spec

    try:
        cal = parse_spec(path).calibration
    except HapiError:
        return DeviceRow(name, "spec", "-", "-", str(path), "unreadable")
    if not cal:
        return DeviceRow(name, "spec", "-", "-", str(path), "datasheet")
    mape = cal.get("fit_mape")
    err = (
        f"calibrated(fit={mape * 100:.1f}%,graphs={cal.get('graphs', '?')})"
        if isinstance(mape, (int, float))
        else "calibrated"
    )
    return DeviceRow(name, "spec", "-", str(cal.get("date", "-")), str(path), err)


def format_devices(rows: list[DeviceRow]) -> str:
    """``rows`` as aligned columns under a header (the file last, unpadded); or the line
    saying there are none."""
    if not rows:
        return NO_DEVICES
    cells = [
        DEVICE_COLUMNS,
        *((r.device, r.source, r.model_id, r.date, r.error, r.file) for r in rows),
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(c[:5], widths, strict=True)) + "  " + c[5]
        for c in cells
    )


def check_devices(profiles: str | Path | None = None) -> tuple[int, int]:
    """Load and validate every table and spec on the search path, as every command that loads
    one does; raise on the first bad one. Return how many tables and specs there are."""
    from hapi_dse.profiling.names import check_name
    from hapi_dse.profiling.specs import parse_spec, spec_paths
    from hapi_dse.profiling.table import check_table

    tables = list_tables(profiles)
    for t in tables:
        check_table(
            t.path,
            model_id=check_name(f"{t.path}: model_id", t.model_id),
            device=check_name(f"{t.path}: device", t.device),
        )
    specs = spec_paths(profiles)
    for p in specs.values():
        parse_spec(p)
    return len(tables), len(specs)
