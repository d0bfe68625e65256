"""The one interface every profiler implements.

A profiler turns a :class:`~hapi_dse.profiling.manifest.Manifest` (the exported segments of
one model) into table rows. ``hapi profile`` calls :meth:`Profiler.profile` once per table;
the rows then go through :func:`~hapi_dse.profiling.table.write_table`. Implementations:
:class:`~hapi_dse.profiling.measured.OrtProfiler` (onnxruntime on this machine),
:class:`~hapi_dse.profiling.modelled.ModelledProfiler` (roofline from a device spec) and
:class:`~hapi_dse.profiling.fake.FakeProfiler` (deterministic, for tests).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hapi_dse.profiling.manifest import Manifest, Segment

ProgressFn = Callable[[int, int], None]


@dataclass
class ProfileResult:
    """Table rows (``TABLE_COLUMNS`` + ``energy_source``) and what the sidecar should add."""

    rows: list[dict[str, Any]]
    sidecar: dict[str, Any] = field(default_factory=dict)


def make_row(
    seg: Segment,
    *,
    batch: int,
    latency_ms: float,
    latency_p90_ms: float,
    energy_mj: float,
    runs: int,
    source: str,
    energy_source: str,
) -> dict[str, Any]:
    return {
        "segment": seg.kind,
        "position": seg.position,
        "head": "" if seg.kind == "block" else seg.head,
        "batch": batch,
        "latency_ms": latency_ms,
        "latency_p90_ms": max(latency_p90_ms, latency_ms),
        "energy_mj": energy_mj,
        "flops": seg.flops,
        "params": seg.params,
        "runs": runs,
        "source": source,
        "energy_source": energy_source,
    }


class Profiler(ABC):
    """Measures or models every table segment of a manifest.

    ``profile`` is called once per ``hapi profile`` run, after the segments are exported (or
    read from ``--onnx-dir``); ``progress(done, total)`` may be called any number of times.
    """

    #: ``measured`` or ``modelled``: the table's ``source`` column.
    source: str = "measured"

    @abstractmethod
    def profile(self, manifest: Manifest, progress: ProgressFn | None = None) -> ProfileResult:
        """Rows for ``manifest.table_segments()``, in any order, and sidecar additions."""
