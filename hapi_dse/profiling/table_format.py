"""The profile table's format (contract, DESIGN 2.2): columns, units, and the checks that
every row and sidecar passes before it is written and after it is read.

Checks work on plain dicts of strings or numbers, so writing needs no pandas; an error names
the file (``where``), the first bad line and the rule.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from hapi_dse.errors import ArtefactError

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


def format_value(v: Any) -> str:
    """A cell as the table writes it: floats with 6 significant digits."""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


#: the largest figure each numeric column may hold: an hour for a latency (as for the
#: sidecar's ms figures, :data:`~hapi_dse.cost.deployment.MAX_MS`), an hour at 1 kW for an
#: energy, 2**53 (exact in a float) for a count; a larger one is a broken table, and 1e308
#: made every predicted latency infinite
MAX_MJ = 3.6e9
MAX_COUNT = 2**53


def _top(col: str) -> float:
    from hapi_dse.cost.deployment import MAX_MS

    if col in _INT_COLS:
        return MAX_COUNT
    return MAX_MJ if col == "energy_mj" else MAX_MS


def _num(value: Any, col: str, integer: bool) -> float:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        raise ValueError(f"{col} is empty")
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{col} is {value!r}, expected a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{col} is {value!r}, expected a finite number")
    if integer and x != int(x):
        raise ValueError(f"{col} is {value!r}, expected an integer")
    if x < 0:
        raise ValueError(f"{col} is {value!r}, must be >= 0")
    if x > _top(col):
        raise ValueError(f"{col} is {value!r}, must be <= {_top(col):g}")
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
    if row["latency_ms"] <= 0:  # a run takes time; a zero would make goodput infinite
        raise ValueError(f"latency_ms is {rec['latency_ms']!r}, must be > 0")
    if row["latency_p90_ms"] < row["latency_ms"] * (1 - 1e-6):
        raise ValueError(
            f"latency_p90_ms ({row['latency_p90_ms']}) is below latency_ms ({row['latency_ms']})"
        )
    esrc = str(rec.get("energy_source") or ("modelled" if src == "modelled" else "")).strip()
    if esrc and esrc not in ENERGY_SOURCES:
        raise ValueError(f"energy_source is {esrc!r}, expected one of {', '.join(ENERGY_SOURCES)}")
    row["energy_source"] = esrc or "modelled"
    return row


def order_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Blocks, then heads, then the final; by position, heads in first-seen order."""
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
    ``threads`` integers; ``call_overhead_ms`` (and the other ms sums) from 0 to an hour
    (:data:`~hapi_dse.cost.deployment.MAX_MS`; or null); ``units`` the canonical ones;
    ``deployment`` valid terms (:meth:`~hapi_dse.cost.deployment.DeploymentTerms.from_dict`).
    ``hapi devices --check`` and every command that loads a table run this same check."""
    from hapi_dse.cost.deployment import MAX_MS, DeploymentTerms

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
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= MAX_MS:
            raise fail(key, f"a number of ms from 0 to {MAX_MS:g} (an hour)", v)
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
