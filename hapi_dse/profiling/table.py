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

This module reads and writes tables; the format and its checks are
:mod:`~hapi_dse.profiling.table_format`, plain names and paths
:mod:`~hapi_dse.profiling.names`, finding devices and tables
:mod:`~hapi_dse.profiling.devices`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hapi_dse.csvio import csv_text
from hapi_dse.errors import ArtefactError, SettingError
from hapi_dse.paths import default_profiles_out
from hapi_dse.profiling.devices import find_table
from hapi_dse.profiling.names import (
    NAME_RULE,
    sidecar_path,
    table_path,
    valid_device_name,
)
from hapi_dse.profiling.table_format import (
    EXTRA_COLUMNS,
    LATENCY_NOTE,
    SOURCES,
    TABLE_COLUMNS,
    UNITS,
    format_value,
    order_rows,
    validate_rows,
    validate_sidecar,
)
from hapi_dse.readers import loads_json, parse_csv, read_json, read_text
from hapi_dse.training_id import check_same_training

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["ProfileTable", "check_table", "load_table", "read_table", "write_table"]


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
    from hapi_dse.atomic import atomic_path
    from hapi_dse.provenance import provenance, utc_now

    if not valid_device_name(device):
        raise SettingError("device", f"{device!r}: use {NAME_RULE}")
    records: list[dict[str, Any]] = (
        rows.to_dict("records")
        if hasattr(rows, "to_dict")  # a DataFrame
        else [dict(r) for r in rows]  # type: ignore[union-attr]
    )
    csv_path = table_path(default_profiles_out(profiles), device, model_id)
    checked = order_rows(validate_rows(records, f"table for {device}/{model_id}"))
    sources = {r["source"] for r in checked}
    if len(sources) != 1:
        raise ArtefactError(f"{csv_path}: mixed sources {sorted(sources)} in one table")
    side = dict(sidecar)
    side.setdefault("device", device)
    side.setdefault("model_id", model_id)
    if side["device"] != device:
        raise ArtefactError(f"{csv_path}: sidecar says device {side['device']!r}, not {device!r}")
    check_same_training(
        f"{csv_path}: sidecar",
        side["model_id"],
        model_id,
        holder="the table being written",
        fix="pass a sidecar without model_id or with the table's",
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

    cols = [*TABLE_COLUMNS, *EXTRA_COLUMNS]
    table_text = csv_text([{c: format_value(r[c]) for c in cols} for r in checked], cols)
    text = json.dumps(side, indent=2, default=_json_default) + "\n"
    json_path = sidecar_path(csv_path)
    validate_sidecar(loads_json(text, json_path), str(json_path))  # never write what readers refuse
    with atomic_path(csv_path) as tmp_csv, atomic_path(json_path) as tmp_json:
        tmp_csv.write_text(table_text)
        tmp_json.write_text(text)
        # both temps are complete; the two renames follow back to back (json first)
    return csv_path


def _json_default(o: Any) -> Any:
    from hapi_dse.atomic import _json_default as default

    return default(o)


def check_table(
    path: str | Path, *, model_id: str | None = None, device: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read and validate one table file and its sidecar without pandas: the checked rows and
    the sidecar. ``model_id`` defaults to the file's name, ``device`` to its directory's."""
    path = Path(path)
    raw = read_text(path)  # one line for an unreadable, oversized or non-UTF-8 file
    if not sidecar_path(path).exists():
        raise ArtefactError(f"{path}: its sidecar {sidecar_path(path).name} is missing")
    side = read_json(sidecar_path(path))
    validate_sidecar(side, str(sidecar_path(path)))
    want_id = model_id if model_id is not None else path.stem
    check_same_training(
        f"{path}: table",
        side.get("model_id"),
        want_id,
        holder="the model asked for" if model_id is not None else "its file name",
        fix="profile this model with 'hapi profile --model RUN'",
    )
    want_dev = device if device is not None else path.parent.name
    if side.get("device", want_dev) != want_dev:
        raise ArtefactError(f"{path}: sidecar says device {side.get('device')!r}, not {want_dev!r}")
    records = parse_csv(raw, path)
    if not records.fieldnames:
        raise ArtefactError(f"{path}: empty file; expected a header {','.join(TABLE_COLUMNS)}")
    if records:
        missing = [c for c in TABLE_COLUMNS if c not in records.fieldnames]
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
    return rows, side


def read_table(
    path: str | Path, *, model_id: str | None = None, device: str | None = None
) -> ProfileTable:
    """Load and validate one table file (and its sidecar): :func:`check_table`'s checks."""
    import pandas as pd

    path = Path(path)
    rows, side = check_table(path, model_id=model_id, device=device)
    df = pd.DataFrame(rows, columns=[*TABLE_COLUMNS, *EXTRA_COLUMNS])
    return ProfileTable(
        device=device if device is not None else path.parent.name,
        model_id=model_id if model_id is not None else path.stem,
        rows=df,
        sidecar=side,
        path=path,
    )


def load_table(device: str, model_id: str, profiles: str | Path | None = None) -> ProfileTable:
    """Find ``DEVICE/MODEL_ID.csv`` on the profile search path and load it, validated."""
    return read_table(find_table(device, model_id, profiles), model_id=model_id, device=device)
