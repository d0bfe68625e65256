"""What a deployed one-graph design costs beyond the sum of its profiled segments.

A profile table times every block and head as its own graph, back to back (warm). The export
that runs on the device (``hapi export``) is one graph with the exits as nested ``If`` nodes,
run on a stream of samples that leave at different exits. Measured on the bundled example,
that graph costs more than the sum of its parts, in ways that each have a term here
(the sidecar's ``deployment`` section, DESIGN 2.2; README "How predictions are made"):

``graph_entry_ms``
    Entering a graph that has exits: its optional ``thresholds`` and ``temperatures``
    inputs each resolved to the fed tensor or the searched default (``OptionalHasElement``
    and an ``If``), paid once per inference by every design with at least one exit.
``decision_ms`` (per exit policy)
    One exit decision (softmax/max/compare, or entropy, or the patience comparison) and its
    ``If`` dispatch, paid for every exit a sample evaluates.
``stage_entry_ms``
    Entering the next stage after an exit did not fire (the branch's layout-anchor 1x1
    convolution and the subgraph's start-up), paid once per stage entered after the first.
``block_offset_ms``
    What a block costs inside one graph beyond its own profiled latency, per block run; it
    is negative where a block timed alone pays for its own input and output tensors, which
    inside one graph flow from block to block (the table's blocks sum to more than the
    monolithic backbone).
``nested_factor``
    Blocks that run inside an ``If`` branch run this much slower (a share of their latency).
``cold_ms_per_mb``
    Milliseconds per MB of block weights that the previous inference did not use: the deep
    path after early exits finds its weights out of cache. A block that a share ``r`` of the
    samples reach is cold for a sample with probability ``1 - r`` (samples in random order).
``evicted_ms_per_mb``
    Milliseconds per MB of block weights that the previous inference used beyond this
    sample's path: a deep predecessor pushes the early blocks' data out of cache. A sample
    leaving at exit ``i`` expects ``sum over later blocks of weights x reach``.

Measured tables fit them on real one-graph exports (:mod:`hapi_dse.profiling.graph_terms`);
modelled tables derive them from the device spec. A table without them (older tables) gets
zeros: the plain sum of the segments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hapi_dse.cost.policies import get_policy, policy_names
from hapi_dse.errors import ArtefactError

#: the largest time in ms a profile table may give for one segment, one call or one term:
#: an hour (1e308 ms made every latency infinite, and design.json non-standard JSON)
MAX_MS = 3_600_000.0
#: the largest ``nested_factor`` (blocks inside an ``If`` this many times slower)
MAX_FACTOR = 100.0


@dataclass(frozen=True)
class DeploymentTerms:
    """The deployment terms (see the module docstring); zeros mean "sum of segments"."""

    decision_ms: Mapping[str, float] = field(default_factory=dict)
    stage_entry_ms: float = 0.0
    block_offset_ms: float = 0.0
    nested_factor: float = 0.0
    cold_ms_per_mb: float = 0.0
    evicted_ms_per_mb: float = 0.0
    graph_entry_ms: float = 0.0
    source: str = "none"

    def decision(self, policy: str) -> float:
        """One decision of ``policy``; 0.0 for a policy the table has no figure for."""
        return float(self.decision_ms.get(policy, 0.0))

    @property
    def is_zero(self) -> bool:
        return not (
            any(self.decision_ms.values())
            or self.stage_entry_ms
            or self.block_offset_ms
            or self.nested_factor
            or self.cold_ms_per_mb
            or self.evicted_ms_per_mb
            or self.graph_entry_ms
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_ms": {p: float(self.decision_ms.get(p, 0.0)) for p in policy_names()},
            "stage_entry_ms": self.stage_entry_ms,
            "block_offset_ms": self.block_offset_ms,
            "nested_factor": self.nested_factor,
            "cold_ms_per_mb": self.cold_ms_per_mb,
            "evicted_ms_per_mb": self.evicted_ms_per_mb,
            "graph_entry_ms": self.graph_entry_ms,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "deployment terms") -> DeploymentTerms:
        """Read a sidecar's ``deployment`` section; every figure finite and >= 0."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ArtefactError(f"{where}: 'deployment' must be a JSON object")

        def num(v: Any, name: str, signed: bool = False, top: float = MAX_MS) -> float:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ArtefactError(f"{where}: deployment {name} must be a number, got {v!r}")
            x = float(v)
            if not (-top if signed else 0.0) <= x <= top:  # NaN fails too
                low = f"{-top:g}" if signed else "0"
                raise ArtefactError(
                    f"{where}: deployment {name} must be a number from {low} to {top:g}, got {v}"
                )
            return x

        dec = data.get("decision_ms", {})
        if not isinstance(dec, Mapping):
            raise ArtefactError(f"{where}: deployment decision_ms must map policies to ms")
        return cls(
            decision_ms={str(p): num(v, f"decision_ms.{p}") for p, v in dec.items()},
            stage_entry_ms=num(data.get("stage_entry_ms", 0.0), "stage_entry_ms"),
            block_offset_ms=num(data.get("block_offset_ms", 0.0), "block_offset_ms", True),
            nested_factor=num(data.get("nested_factor", 0.0), "nested_factor", top=MAX_FACTOR),
            cold_ms_per_mb=num(data.get("cold_ms_per_mb", 0.0), "cold_ms_per_mb"),
            evicted_ms_per_mb=num(data.get("evicted_ms_per_mb", 0.0), "evicted_ms_per_mb"),
            graph_entry_ms=num(data.get("graph_entry_ms", 0.0), "graph_entry_ms"),
            source=str(data.get("source", "measured")),
        )


def first_decision(policy: str, patience: int) -> int:
    """Index of the first exit that has a decision (an ``If``): exits before it only compute
    their head (``patience``: the first ``p - 1`` exits cannot fire yet)."""
    return get_policy(policy).first_decision(patience)


def path_extra_ms(
    terms: DeploymentTerms,
    decision_ms: Any,
    first: Any,
    stage_ms: Any,
    stage_mb: Any,
    stage_blocks: Any,
    left: Any,
    n: int,
) -> Any:
    """The deployment terms of every exit path of ``D`` designs with ``m`` exits each.

    ``decision_ms`` and ``first`` are ``(D,)``: each design's decision cost and
    :func:`first_decision`. ``stage_ms`` / ``stage_mb`` / ``stage_blocks`` are
    ``(D, m + 1)``: the net block latency, the block weights (MB) and the number of blocks
    of each stage (the blocks after the previous exit up to this one; the last stage ends
    with the final classifier). ``left`` ``(D, m + 1)``
    counts the samples leaving at each exit. Returns ``(D, m + 1)``: what a sample leaving
    at exit ``i`` pays on top of its segments (exit ``m`` = the final classifier).
    """
    import numpy as np

    stage_ms = np.asarray(stage_ms, np.float64)
    d, stages = stage_ms.shape
    i = np.arange(stages)[None, :]
    first = np.asarray(first).reshape(d, 1)
    decides = (i < stages - 1) & (i >= first)
    stage_mb = np.asarray(stage_mb, np.float64)
    before = (np.cumsum(left, axis=1) - left) / max(n, 1)  # share gone before each stage
    extra = (
        np.where(decides, np.asarray(decision_ms, np.float64).reshape(d, 1), 0.0)
        + np.where((i == 0) & (stages > 1), terms.graph_entry_ms, 0.0)
        + np.where(i >= 1, terms.stage_entry_ms, 0.0)
        + terms.block_offset_ms * np.asarray(stage_blocks, np.float64)
        + np.where(i > first, terms.nested_factor * stage_ms, 0.0)
        + terms.cold_ms_per_mb * stage_mb * before
    )
    out = np.cumsum(extra, axis=1)
    if terms.evicted_ms_per_mb:
        # weights of the later stages, each weighted by the share of samples reaching it
        reached = stage_mb * (1.0 - before)
        later = np.cumsum(reached[:, ::-1], axis=1)[:, ::-1] - reached
        out = out + terms.evicted_ms_per_mb * later
    return out


def path_extra_ms_one(
    terms: DeploymentTerms,
    decision_ms: float,
    first: int,
    ends: list[int],
    left: list[int],
    n: int,
    ms0: list[float],
    mb0: list[float],
) -> list[float]:
    """:func:`path_extra_ms` for one design, on plain floats: the cost model's per-design
    path, where ``m + 1`` numbers make numpy calls the larger cost. ``ends`` is the last
    block of each stage; ``ms0`` / ``mb0`` the cumulative net block latency and weights with
    a leading 0 (the blocks before ``p`` sum to ``ms0[p]``)."""
    stages = len(ends)
    extra: list[float] = []
    reached: list[float] = []
    total = terms.graph_entry_ms if stages > 1 else 0.0
    gone = 0
    lo = 0
    offset, cold, entry, nested = (
        terms.block_offset_ms,
        terms.cold_ms_per_mb,
        terms.stage_entry_ms,
        terms.nested_factor,
    )
    for i in range(stages):
        hi = ends[i] + 1
        share = gone / n if n else 0.0
        mb = mb0[hi] - mb0[lo]
        total += offset * (hi - lo) + cold * mb * share
        if first <= i < stages - 1:
            total += decision_ms
        if i >= 1:
            total += entry
        if i > first:
            total += nested * (ms0[hi] - ms0[lo])
        extra.append(total)
        reached.append(mb * (1.0 - share))
        gone += left[i]
        lo = hi
    if terms.evicted_ms_per_mb:
        later = 0.0
        for i in range(stages - 1, -1, -1):
            extra[i] += terms.evicted_ms_per_mb * later
            later += reached[i]
    return extra
