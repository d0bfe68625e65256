"""Profile tables (contract, DESIGN 2.2): ``DEVICE/MODEL_ID.csv`` plus a JSON sidecar.

One row per segment: ``segment`` (``block``, ``head`` or ``final``), ``position``, ``head``,
``batch``, ``latency_ms`` (median), ``latency_p90_ms``, ``energy_mj``, ``flops``, ``params``,
``runs``, ``source`` (``measured``/``modelled``, how the latency was obtained). An extra
column ``energy_source`` says how the energy was obtained (``rapl``, ``nvml``, ``command`` or
``modelled``).

**Meaning of a latency.** Each segment is timed as its own onnxruntime session, so every
``latency_ms`` includes one ``InferenceSession.run`` call overhead; the sidecar's
``call_overhead_ms`` is that overhead alone (measured on an empty graph, or taken from the
device spec for modelled tables), so a cost model can subtract it where segments would be
fused into one graph. ``monolithic_backbone_ms`` (measured tables) is the median of the
backbone exported as one graph, and ``segments_sum_ms`` the sum of the block medians.

Writing is atomic; loading validates columns, values, segment names, the sidecar's
``model_id`` and the row count, and names the file and the first bad line. ``model_id``
covers the architecture and the weights, so a table of another training is refused. Neither
torch nor onnxruntime is imported here; pandas only when a table is loaded.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hapi_dse.errors import ArtefactError, UsageError, unknown_name
from hapi_dse.paths import SPECS_SUBDIR, default_profiles_out, profile_search_path

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

TABLE_COLUMNS = (
    "segment",
    "position",
    "head",
    "batch",
    "latency_ms",
    "latency_p90_ms",
    "energy_mj",
    "flops",
    "params",
    "runs",
    "source",
)
EXTRA_COLUMNS = ("energy_source",)
SEGMENT_KINDS = ("block", "head", "final")
SOURCES = ("measured", "modelled")
ENERGY_SOURCES = ("rapl", "nvml", "command", "modelled")
UNITS = {
    "latency_ms": "ms",
    "latency_p90_ms": "ms",
    "energy_mj": "mJ",
    "flops": "FLOP",
    "params": "count",
    "call_overhead_ms": "ms",
}
_INT_COLS = ("position", "batch", "flops", "params", "runs")
_FLOAT_COLS = ("latency_ms", "latency_p90_ms", "energy_mj")
LATENCY_NOTE = (
    "each latency_ms is the median latency of one onnxruntime session.run of that segment "
    "alone (measured tables: the median of the quietest of the timing rounds), so it "
    "includes one call overhead (call_overhead_ms)"
)


def table_path(root: str | Path, device: str, model_id: str) -> Path:
    """``ROOT/DEVICE/MODEL_ID.csv``; refuses a device or model id that is not a plain name
    (one from a file could otherwise name a path outside ``root``)."""
    check_name("device", device)
    check_name("model_id", model_id)
    return Path(root) / device / f"{model_id}.csv"


def sidecar_path(csv_path: Path) -> Path:
    return csv_path.with_suffix(".json")


@dataclass
class ProfileTable:
    """A validated profile table. Lookups are by (segment, position, head)."""

    device: str
    model_id: str
    rows: pd.DataFrame
    sidecar: dict[str, Any]
    path: Path
    _index: dict[tuple[str, int, str], int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {}
        for i, (seg, pos, head) in enumerate(
            zip(self.rows["segment"], self.rows["position"], self.rows["head"], strict=True)
        ):
            key = ("final", -1, "final") if seg == "final" else (seg, int(pos), str(head))
            self._index[key] = i

    def _row(self, segment: str, position: int, head: str) -> int:
        key = (
            ("final", -1, "final")
            if segment == "final" or head == "final"
            else (segment, int(position), head if segment == "head" else "")
        )
        try:
            return self._index[key]
        except KeyError:
            raise ArtefactError(
                f"{self.path}: no row for segment={segment} position={position} head={head}"
            ) from None

    @property
    def num_blocks(self) -> int:
        return int((self.rows["segment"] == "block").sum())

    def block_latency_ms(self) -> np.ndarray:
        """Median latency of every block, indexed by position (shape ``(num_blocks,)``)."""
        return self._block_col("latency_ms")

    def block_energy_mj(self) -> np.ndarray:
        return self._block_col("energy_mj")

    def _block_col(self, col: str) -> np.ndarray:
        import numpy as np

        blocks = self.rows[self.rows["segment"] == "block"].sort_values("position")
        return np.asarray(blocks[col].to_numpy(), dtype=np.float64)

    def head_latency_ms(self, position: int, head: str) -> float:
        """Median latency of ``head`` after block ``position``; ``"final"`` is the classifier."""
        return float(self.rows["latency_ms"].iat[self._row("head", position, head)])

    def head_energy_mj(self, position: int, head: str) -> float:
        return float(self.rows["energy_mj"].iat[self._row("head", position, head)])

    def params(self, segment: str, position: int, head: str) -> int:
        return int(self.rows["params"].iat[self._row(segment, position, head)])

    @property
    def call_overhead_ms(self) -> float:
        """One bare ``session.run`` (included once in every segment's latency)."""
        return float(self.sidecar.get("call_overhead_ms") or 0.0)

    @property
    def source(self) -> str:
        src = self.sidecar.get("source")
        if src in SOURCES:
            return str(src)
        return str(self.rows["source"].iat[0])

    @property
    def energy_source(self) -> str:
        return str(self.sidecar.get("energy_source", "modelled"))

    @property
    def head_types(self) -> list[str]:
        heads = self.rows.loc[self.rows["segment"] == "head", "head"]
        return list(dict.fromkeys(str(h) for h in heads))


# --------------------------------------------------------------------------------------------
# Validation (on plain dicts of strings or numbers, so writing needs no pandas)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _num(value: Any, col: str, integer: bool) -> float:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        raise ValueError(f"{col} is empty")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{col} is {value!r}, expected a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{col} is {value!r}, expected a finite number")
    if integer and x != int(x):
        raise ValueError(f"{col} is {value!r}, expected an integer")
    if x < 0:
        raise ValueError(f"{col} is {value!r}, must be >= 0")
    return x


def validate_rows(records: Sequence[Mapping[str, Any]], where: str) -> list[dict[str, Any]]:
    """Check and normalise table rows; the error names ``where`` and the first bad line."""
    if not records:
        raise ArtefactError(f"{where}: the table has no rows")
    missing = [c for c in TABLE_COLUMNS if c not in records[0]]
    if missing:
        raise ArtefactError(
            f"{where}: missing column(s) {', '.join(missing)}; expected {', '.join(TABLE_COLUMNS)}"
        )
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, int, str]] = set()
    for i, rec in enumerate(records):
        line = i + 2  # header is line 1
        try:
            row = _validate_row(rec)
        except ValueError as e:
            raise ArtefactError(f"{where}: line {line}: {e}") from None
        key = (row["segment"], row["position"], row["head"])
        if key in seen:
            raise ArtefactError(f"{where}: line {line}: duplicate row for {key}")
        seen.add(key)
        out.append(row)
    blocks = sorted(r["position"] for r in out if r["segment"] == "block")
    if blocks != list(range(len(blocks))) or not blocks:
        raise ArtefactError(
            f"{where}: block positions must be 0..N-1 once each, got {blocks or 'none'}"
        )
    finals = [r for r in out if r["segment"] == "final"]
    if len(finals) != 1:
        raise ArtefactError(f"{where}: expected exactly one 'final' row, got {len(finals)}")
    for i, r in enumerate(out):
        if r["segment"] == "head" and r["position"] >= len(blocks):
            raise ArtefactError(
                f"{where}: line {i + 2}: head at position {r['position']} but only "
                f"{len(blocks)} blocks"
            )
    return out


def _validate_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    for col in TABLE_COLUMNS:
        if rec.get(col) is None:
            raise ValueError(f"{col} is missing (truncated line?)")
    seg = str(rec["segment"]).strip()
    if seg not in SEGMENT_KINDS:
        raise ValueError(f"segment is {seg!r}, expected one of {', '.join(SEGMENT_KINDS)}")
    head = str(rec["head"]).strip()
    if head.lower() == "nan":
        head = ""
    if seg == "block" and head:
        raise ValueError(f"a block row has head {head!r}; expected it empty")
    if seg == "head" and (not head or head == "final"):
        raise ValueError(f"a head row needs a head type, got {head!r}")
    if seg == "final":
        head = "final"
    src = str(rec["source"]).strip()
    if src not in SOURCES:
        raise ValueError(f"source is {src!r}, expected one of {', '.join(SOURCES)}")
    row: dict[str, Any] = {"segment": seg, "head": head, "source": src}
    for col in _INT_COLS:
        row[col] = int(_num(rec[col], col, integer=True))
    for col in _FLOAT_COLS:
        row[col] = _num(rec[col], col, integer=False)
    if row["batch"] < 1:
        raise ValueError(f"batch is {row['batch']}, must be >= 1")
    if row["latency_p90_ms"] < row["latency_ms"] * (1 - 1e-6):
        raise ValueError(
            f"latency_p90_ms ({row['latency_p90_ms']}) is below latency_ms ({row['latency_ms']})"
        )
    esrc = str(rec.get("energy_source") or ("modelled" if src == "modelled" else "")).strip()
    if esrc and esrc not in ENERGY_SOURCES:
        raise ValueError(f"energy_source is {esrc!r}, expected one of {', '.join(ENERGY_SOURCES)}")
    row["energy_source"] = esrc or "modelled"
    return row


def _order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {k: i for i, k in enumerate(SEGMENT_KINDS)}
    heads: list[str] = list(dict.fromkeys(r["head"] for r in rows if r["segment"] == "head"))
    return sorted(
        rows,
        key=lambda r: (
            rank[r["segment"]],
            r["position"],
            heads.index(r["head"]) if r["segment"] == "head" else 0,
        ),
    )


_SIDECAR_NUMBERS = ("call_overhead_ms", "segments_sum_ms", "monolithic_backbone_ms")
_SIDECAR_FIX = "profile the device again ('hapi profile') or restore the file"


def validate_sidecar(side: Any, where: str) -> None:
    """Check the sidecar keys that readers use: an object; ``device``, ``model_id``,
    ``date`` strings; ``source`` and ``energy_source`` known names; ``rows``, ``batch``,
    ``threads`` integers; ``call_overhead_ms`` (and the other ms sums) finite and >= 0 (or
    null); ``units`` the canonical ones; ``deployment`` valid terms
    (:meth:`~hapi_dse.cost.deployment.DeploymentTerms.from_dict`). ``hapi devices --check``
    and every command that loads a table run this same check."""
    from hapi_dse.cost.deployment import DeploymentTerms

    def fail(key: str, rule: str, value: Any) -> ArtefactError:
        shown = json.dumps(value, default=str)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return ArtefactError(f"{where}: {key} must be {rule}, got {shown}; {_SIDECAR_FIX}")

    if not isinstance(side, dict):
        raise ArtefactError(
            f"{where}: expected a JSON object (device, model_id, source...), got a JSON "
            f"{type(side).__name__}; {_SIDECAR_FIX}"
        )
    for key in ("device", "model_id", "date"):
        if key in side and not isinstance(side[key], str):
            raise fail(key, "a string", side[key])
    for key, names in (("source", SOURCES), ("energy_source", ENERGY_SOURCES)):
        if key in side and side[key] not in names:
            raise fail(key, f"one of {', '.join(names)}", side[key])
    for key, low in (("rows", 0), ("batch", 1), ("threads", 1)):
        v = side.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
            raise fail(key, f"an integer >= {low}", v)
    for key in _SIDECAR_NUMBERS:
        v = side.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise fail(key, "a finite number of ms >= 0", v)
    units = side.get("units")
    if units is not None:
        if not isinstance(units, dict):
            raise fail("units", "an object mapping columns to units", units)
        for col, unit in units.items():
            if col in UNITS and unit != UNITS[col]:
                raise ArtefactError(
                    f"{where}: units says {col} is in {unit!r}, expected {UNITS[col]!r}; "
                    f"{_SIDECAR_FIX}"
                )
    DeploymentTerms.from_dict(side.get("deployment"), where)


# --------------------------------------------------------------------------------------------
# Writing


def write_table(
    rows: Iterable[Mapping[str, Any]] | pd.DataFrame,
    sidecar: Mapping[str, Any],
    *,
    device: str,
    model_id: str,
    profiles: str | Path | None = None,
) -> Path:
    """Validate and write ``DEVICE/MODEL_ID.csv`` and its sidecar atomically; return the csv.

    ``sidecar`` may hold ``provenance`` (from :func:`hapi_dse.provenance.provenance`); one is
    made otherwise. Keys filled in here when absent: device, model_id, source,
    energy_source, date, units, rows, segments_sum_ms, call_overhead_ms, latency_note.
    """
    from hapi_dse.provenance import atomic_path, provenance, utc_now

    if not valid_device_name(device):
        raise UsageError(f"--device {device!r}: use {NAME_RULE}")
    records: list[dict[str, Any]] = (
        rows.to_dict("records")
        if hasattr(rows, "to_dict")  # a DataFrame
        else [dict(r) for r in rows]  # type: ignore[union-attr]
    )
    csv_path = table_path(default_profiles_out(profiles), device, model_id)
    checked = _order(validate_rows(records, f"table for {device}/{model_id}"))
    sources = {r["source"] for r in checked}
    if len(sources) != 1:
        raise ArtefactError(f"{csv_path}: mixed sources {sorted(sources)} in one table")
    side = dict(sidecar)
    side.setdefault("device", device)
    side.setdefault("model_id", model_id)
    if side["device"] != device or side["model_id"] != model_id:
        raise ArtefactError(
            f"{csv_path}: sidecar says {side['device']}/{side['model_id']}, "
            f"expected {device}/{model_id}"
        )
    side.setdefault("source", sources.pop())
    side.setdefault("energy_source", checked[0]["energy_source"])
    side.setdefault("date", utc_now())
    side.setdefault("call_overhead_ms", 0.0)
    side.setdefault(
        "segments_sum_ms", sum(r["latency_ms"] for r in checked if r["segment"] == "block")
    )
    side["rows"] = len(checked)
    side["units"] = UNITS
    side["latency_note"] = LATENCY_NOTE
    side.setdefault("provenance", provenance(seed=side.get("seed")))

    buf = io.StringIO()
    cols = [*TABLE_COLUMNS, *EXTRA_COLUMNS]
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for r in checked:
        writer.writerow({c: _fmt(r[c]) for c in cols})
    text = json.dumps(side, indent=2, default=_json_default) + "\n"
    json_path = sidecar_path(csv_path)
    validate_sidecar(json.loads(text), str(json_path))  # never write what readers refuse
    with atomic_path(csv_path) as tmp_csv, atomic_path(json_path) as tmp_json:
        tmp_csv.write_text(buf.getvalue())
        tmp_json.write_text(text)
        # both temps are complete; the two renames follow back to back (json first)
    return csv_path


def _json_default(o: Any) -> Any:
    from hapi_dse.provenance import _json_default as default

    return default(o)


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


# --------------------------------------------------------------------------------------------
# Finding and loading


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


def read_table(
    path: str | Path, *, model_id: str | None = None, device: str | None = None
) -> ProfileTable:
    """Load and validate one table file (and its sidecar)."""
    import pandas as pd

    path = Path(path)
    try:
        raw = path.read_text()
    except OSError as e:
        raise ArtefactError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ArtefactError(f"{path}: not a text CSV file") from None
    try:
        side = json.loads(sidecar_path(path).read_text())
    except FileNotFoundError:
        raise ArtefactError(f"{path}: its sidecar {sidecar_path(path).name} is missing") from None
    except (OSError, ValueError) as e:
        raise ArtefactError(f"{sidecar_path(path)}: not valid JSON ({e})") from None
    validate_sidecar(side, str(sidecar_path(path)))
    want_id = model_id if model_id is not None else path.stem
    if side.get("model_id") != want_id:
        raise ArtefactError(
            f"{path}: table is for model {side.get('model_id')!r}, not {want_id!r}; "
            "profile this model with 'hapi profile --model RUN'"
        )
    want_dev = device if device is not None else path.parent.name
    if side.get("device", want_dev) != want_dev:
        raise ArtefactError(f"{path}: sidecar says device {side.get('device')!r}, not {want_dev!r}")
    reader = csv.DictReader(io.StringIO(raw))
    if not reader.fieldnames:
        raise ArtefactError(f"{path}: empty file; expected a header {','.join(TABLE_COLUMNS)}")
    records = list(reader)
    if records:
        missing = [c for c in TABLE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ArtefactError(
                f"{path}: missing column(s) {', '.join(missing)}; "
                f"expected {', '.join(TABLE_COLUMNS)}"
            )
    n = side.get("rows")
    if isinstance(n, int) and n != len(records):
        raise ArtefactError(
            f"{path}: line {len(records) + 2}: the file has {len(records)} rows but its "
            f"sidecar says {n} (truncated or edited?)"
        )
    rows = validate_rows(records, str(path))
    if not raw.endswith("\n"):
        raise ArtefactError(f"{path}: line {len(records) + 1}: file ends mid-line (truncated?)")
    df = pd.DataFrame(rows, columns=[*TABLE_COLUMNS, *EXTRA_COLUMNS])
    return ProfileTable(device=want_dev, model_id=want_id, rows=df, sidecar=side, path=path)


def load_table(device: str, model_id: str, profiles: str | Path | None = None) -> ProfileTable:
    """Find ``DEVICE/MODEL_ID.csv`` on the profile search path and load it, validated."""
    return read_table(find_table(device, model_id, profiles), model_id=model_id, device=device)
