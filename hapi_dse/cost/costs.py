"""Per-segment costs of one model on one device, aligned with the exit-statistics columns.

A profile table (DESIGN 2.2) times every segment (each block, each head, the final
classifier) as its own onnxruntime session, so each row's ``latency_ms`` includes one
``InferenceSession.run`` call overhead (the sidecar's ``call_overhead_ms``). A deployed
design is ONE graph, run with ONE call, so the cost model uses *net* segment costs and adds
the overhead once per inference, and what the one graph adds (the sidecar's ``deployment``
terms, :mod:`hapi_dse.cost.deployment`):

    latency(sample) = call_overhead_ms + sum over evaluated segments of
                      max(latency_ms - call_overhead_ms, 0) + deployment terms of its path

Energy is treated the same way: a segment's overhead energy is its share of its own
energy (``energy_mj * call_overhead_ms / latency_ms``, i.e. power x overhead time), and one
call's overhead energy (``call_overhead_ms`` x the table's mean power) is added back once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hapi_dse.cost.deployment import DeploymentTerms
from hapi_dse.errors import ArtefactError
from hapi_dse.exit_stats import ExitStats

BYTES_PER_PARAM = 4  # float32 weights


@dataclass(frozen=True)
class SegmentCosts:
    """Net costs per backbone block and per exit column (same column order as the stats).

    Column ``j`` is the head at ``position[j]`` named ``head[j]``; the last column is the
    final classifier (head ``"final"``). Latencies in ms, energies in mJ, both net of the
    per-call overhead, which is kept apart in ``call_overhead_ms`` / ``call_overhead_mj``.
    """

    position: np.ndarray  # (k,) int
    head: np.ndarray  # (k,) str
    block_latency_ms: np.ndarray  # (B,)
    head_latency_ms: np.ndarray  # (k,)
    block_energy_mj: np.ndarray  # (B,)
    head_energy_mj: np.ndarray  # (k,)
    block_params: np.ndarray  # (B,) int
    head_params: np.ndarray  # (k,) int
    call_overhead_ms: float = 0.0
    call_overhead_mj: float = 0.0
    device: str = ""
    model_id: str = ""
    source: str = ""
    terms: DeploymentTerms = field(default_factory=DeploymentTerms)
    power_mj_per_ms: float = 0.0  # prices the deployment terms' extra time in energy

    def __post_init__(self) -> None:
        k, b = len(self.position), len(self.block_latency_ms)
        for name in ("head", "head_latency_ms", "head_energy_mj", "head_params"):
            if len(getattr(self, name)) != k:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, expected {k}")
        for name in ("block_energy_mj", "block_params"):
            if len(getattr(self, name)) != b:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, expected {b}")
        if k and int(np.max(self.position)) >= b:
            raise ValueError(
                f"an exit sits after block {int(np.max(self.position))}, "
                f"but there are only {b} blocks"
            )

    @property
    def num_blocks(self) -> int:
        return len(self.block_latency_ms)

    @property
    def block_mb(self) -> np.ndarray:
        """Weights of each block in MB (float32): what a cold block reads from memory."""
        return self.block_params * BYTES_PER_PARAM / 1e6

    @property
    def has_energy(self) -> bool:
        """Whether the table gives any energy at all (measured or modelled)."""
        total = float(np.sum(self.block_energy_mj) + np.sum(self.head_energy_mj))
        return bool(np.isfinite(total) and total > 0)

    @classmethod
    def from_arrays(
        cls,
        *,
        position: Any,
        head: Any,
        block_latency_ms: Any,
        head_latency_ms: Any,
        block_energy_mj: Any = None,
        head_energy_mj: Any = None,
        block_params: Any = None,
        head_params: Any = None,
        call_overhead_ms: float = 0.0,
        call_overhead_mj: float = 0.0,
        terms: DeploymentTerms | None = None,
        power_mj_per_ms: float = 0.0,
        **meta: str,
    ) -> SegmentCosts:
        """Build from plain sequences (net costs); missing energies and params are zero."""
        pos = np.asarray(position, dtype=np.int64)
        bl = np.asarray(block_latency_ms, dtype=np.float64)

        def arr(x: Any, like: np.ndarray, dtype: Any) -> np.ndarray:
            return np.zeros(len(like), dtype) if x is None else np.asarray(x, dtype=dtype)

        return cls(
            position=pos,
            head=np.asarray(head).astype(str),
            block_latency_ms=bl,
            head_latency_ms=np.asarray(head_latency_ms, np.float64),
            block_energy_mj=arr(block_energy_mj, bl, np.float64),
            head_energy_mj=arr(head_energy_mj, pos, np.float64),
            block_params=arr(block_params, bl, np.int64),
            head_params=arr(head_params, pos, np.int64),
            call_overhead_ms=float(call_overhead_ms),
            call_overhead_mj=float(call_overhead_mj),
            terms=terms or DeploymentTerms(),
            power_mj_per_ms=float(power_mj_per_ms),
            **meta,
        )

    @classmethod
    def zero(cls, stats: ExitStats, num_blocks: int | None = None) -> SegmentCosts:
        """Costs of nothing for ``stats``' columns (``num_blocks``: default the last exit's
        block + 1): with them the cost model tells only which exit each sample takes, and
        the accuracy (``hapi eval`` without a table; a check of an exported rule)."""
        blocks = int(stats.position.max()) + 1 if num_blocks is None else num_blocks
        return cls.from_arrays(
            position=stats.position,
            head=stats.head,
            block_latency_ms=np.zeros(blocks),
            head_latency_ms=np.zeros(stats.k),
        )

    @classmethod
    def from_table(cls, table: Any, stats: ExitStats) -> SegmentCosts:
        """Align a :class:`~hapi_dse.profiling.table.ProfileTable` with the stats columns.

        Uses the table's batch-1 rows (the smallest batch profiled when there is none).
        Raises :class:`ArtefactError` when a block or head of the stats has no row, which
        means the table was profiled for another architecture.
        """
        rows = table.rows.copy()
        where = getattr(table, "path", None) or f"profile table for {table.device}"
        if "batch" in rows and len(rows):
            rows = rows[rows["batch"] == (1 if (rows["batch"] == 1).any() else rows["batch"].min())]
        rows["head"] = rows["head"].fillna("").astype(str)
        rows["segment"] = rows["segment"].astype(str)
        ovh = float(getattr(table, "call_overhead_ms", 0.0) or 0.0)

        lat = rows["latency_ms"].to_numpy(np.float64)
        energy = np.nan_to_num(rows["energy_mj"].to_numpy(np.float64), nan=0.0)
        total_lat = float(lat.sum())
        power_w = float(energy.sum()) / total_lat if total_lat > 0 else 0.0  # mJ per ms
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(lat > 0, np.clip(1.0 - ovh / lat, 0.0, 1.0), 0.0)
        rows["net_latency_ms"] = np.maximum(lat - ovh, 0.0)
        rows["net_energy_mj"] = energy * share
        index = {
            (s, int(p), h): r
            for s, p, h, r in zip(
                rows["segment"],
                rows["position"],
                rows["head"],
                rows[["net_latency_ms", "net_energy_mj", "params"]].itertuples(index=False),
                strict=True,
            )
        }

        num_blocks = int(stats.position.max()) + 1
        blocks = rows[rows["segment"] == "block"]
        if len(blocks):
            num_blocks = max(num_blocks, int(blocks["position"].max()) + 1)
        block_rows = []
        for b in range(num_blocks):
            r = index.get(("block", b, ""))
            if r is None:
                raise ArtefactError(
                    f"{where}: no row for block {b}; the table was profiled for another "
                    f"model than {table.model_id}? Rerun 'hapi profile' for this model"
                )
            block_rows.append(r)
        head_rows = []
        for p, h in zip(stats.position.tolist(), stats.head.tolist(), strict=True):
            seg = "final" if h == "final" else "head"
            r = index.get((seg, int(p), h))
            if r is None and seg == "final":
                r = next((v for (s, _, _), v in index.items() if s == "final"), None)
            if r is None:
                raise ArtefactError(
                    f"{where}: no row for head {h!r} at position {p}; the table does not "
                    "match these exit statistics. Rerun 'hapi profile' for this model"
                )
            head_rows.append(r)
        return cls(
            position=stats.position.astype(np.int64),
            head=stats.head.astype(str),
            block_latency_ms=np.array([r[0] for r in block_rows], np.float64),
            head_latency_ms=np.array([r[0] for r in head_rows], np.float64),
            block_energy_mj=np.array([r[1] for r in block_rows], np.float64),
            head_energy_mj=np.array([r[1] for r in head_rows], np.float64),
            block_params=np.array([r[2] for r in block_rows], np.int64),
            head_params=np.array([r[2] for r in head_rows], np.int64),
            call_overhead_ms=ovh,
            call_overhead_mj=ovh * power_w,
            terms=DeploymentTerms.from_dict(
                (getattr(table, "sidecar", None) or {}).get("deployment"), str(where)
            ),
            power_mj_per_ms=power_w,
            device=str(table.device),
            model_id=str(table.model_id),
            source=str(getattr(table, "source", "") or ""),
        )
