"""The metrics hapi predicts, in one table: what SLO parsing, objectives, ``--pick``, the
output files, the console and the plots all derive from.

Adding a metric means adding a row here and computing its column in
:class:`hapi_dse.cost.CostModel`; nothing else lists metric names.

>>> metric("latency").column, metric("latency_ms").unit, metric("accuracy").maximize
('latency_ms', 'ms', True)
>>> [m.name for m in METRIC_TABLE if m.slo]
['accuracy', 'latency', 'p90_latency', 'p99_latency', 'max_latency', 'energy', 'size']
>>> pareto_mask(np.array([[1.0, 0.9], [2.0, 0.95], [2.0, 0.8]]), maximize=[False, True]).tolist()
[True, True, False]
>>> statistics([4.0, 1.0, 3.0, 2.0])
{'mean': 2.5, 'p50': 2.0, 'p90': 4.0, 'p99': 4.0, 'max': 4.0}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hapi_dse.errors import unknown_name

# kind of unit -> {unit as typed (lower case): factor to the canonical unit}
UNITS: dict[str, dict[str, float]] = {
    "time": {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3},
    "energy": {"uj": 1e-3, "µj": 1e-3, "mj": 1.0, "j": 1e3},
    "size": {"kb": 1e-3, "mb": 1.0, "gb": 1e3},
    "fraction": {"%": 1e-2},
    "rate": {},
}
UNIT_HELP = {
    "time": "us, ms or s",
    "energy": "uJ, mJ or J",
    "size": "KB, MB or GB",
    "fraction": "a fraction 0..1 or a percentage",
    "rate": "a number per second",
}
EXAMPLE = {"time": "50ms", "energy": "20mJ", "size": "2MB", "fraction": "92%", "rate": "1000"}


@dataclass(frozen=True)
class Metric:
    """One predicted metric.

    ``name`` is what users type (``--slo latency=…``, ``--objectives``, ``--pick``, ``--x``);
    ``column`` is its column in ``trials.csv`` and the key in every metrics dict.
    """

    name: str
    column: str
    kind: str  # a key of UNITS: how values are written and which units an SLO accepts
    maximize: bool
    label: str  # axis label
    slo: bool = True  # may be bounded with --slo
    objective: bool = True  # may be a search objective, a --pick rule and a plot axis
    statistic: str | None = None  # for latency metrics: the statistic over samples (STATISTICS)

    @property
    def unit(self) -> str:
        """The canonical unit (``ms``, ``mJ``, ``MB``; empty for fractions and rates)."""
        return {"time": "ms", "energy": "mJ", "size": "MB"}.get(self.kind, "")

    def format(self, value: float) -> str:
        """A value as the console shows it: accuracy in %, others to 3 significant digits."""
        if self.kind == "fraction":
            return f"{100 * value:.2f}%"
        if value in (float("inf"), float("-inf")):
            return "inf"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


#: Every metric a design is predicted on, in the cost model's column order.
METRIC_TABLE: tuple[Metric, ...] = (
    Metric("accuracy", "accuracy", "fraction", True, "accuracy (%)"),
    Metric("latency", "latency_ms", "time", False, "mean latency (ms)", statistic="mean"),
    Metric("p90_latency", "p90_latency_ms", "time", False, "p90 latency (ms)", statistic="p90"),
    Metric("p99_latency", "p99_latency_ms", "time", False, "p99 latency (ms)", statistic="p99"),
    Metric(
        "max_latency", "max_latency_ms", "time", False, "worst-case latency (ms)", statistic="max"
    ),
    Metric("energy", "energy_mj", "energy", False, "mean energy (mJ)"),
    Metric("size", "size_mb", "size", False, "model size (MB)"),
    Metric("goodput", "goodput", "rate", True, "goodput (correct / s)", slo=False),
    Metric(
        "exit_fraction",
        "exit_fraction",
        "fraction",
        True,
        "share of samples leaving early",
        slo=False,
        objective=False,
    ),
)

#: The metric columns, in order (the keys of every metrics dict the cost model returns).
METRICS: tuple[str, ...] = tuple(m.column for m in METRIC_TABLE)
#: The metrics that are a statistic over per-sample latencies (their ``statistic`` is set):
#: what ``hapi eval`` and ``--verify`` measure of an export, by the same statistic.
STATISTIC_METRICS: tuple[Metric, ...] = tuple(m for m in METRIC_TABLE if m.statistic)
#: The statistics over per-sample values that hapi reports, in the order it reports them
#: (``hapi eval``: measured and predicted latency): every :attr:`Metric.statistic`, and the
#: median. ``pNN`` is the smallest value that at least NN % of the samples do not exceed
#: (:func:`percentile_rank`).
STATISTICS: tuple[str, ...] = ("mean", "p50", "p90", "p99", "max")
_BY_KEY = {**{m.column: m for m in METRIC_TABLE}, **{m.name: m for m in METRIC_TABLE}}


def find_metric(name: str) -> Metric | None:
    """The metric named ``name`` or with column ``name`` (case-insensitive), else None."""
    return _BY_KEY.get(name.strip().lower())


def metric(name: str, *, kind: str = "metric") -> Metric:
    """Like :func:`find_metric` for objective metrics (those one can search on, pick by and
    plot); any other name raises a :class:`UsageError` listing them."""
    m = find_metric(name)
    if m is None or not m.objective:
        raise unknown_name(kind, name, [m.name for m in METRIC_TABLE if m.objective])
    return m


def percentile_rank(q: int, n: int) -> int:
    """The rank (1-based) of the order statistic that is the ``q``-th percentile of ``n``
    values: the smallest value that at least ``q`` % of them do not exceed, ``ceil(q n / 100)``
    in integers (numpy's ``inverted_cdf`` percentile). The cost model reads its p90 / p99
    at these ranks; :func:`statistic` over measured samples takes the same order statistic.

    >>> percentile_rank(90, 10), percentile_rank(90, 11), percentile_rank(99, 1000)
    (9, 10, 990)
    """
    return -(-q * n // 100)


def statistic(values: Sequence[float] | np.ndarray, name: str) -> float:
    """The statistic ``name`` (one of :data:`STATISTICS`) over per-sample ``values``, as the
    cost model defines it: ``mean``, ``max``, or ``pNN`` the order statistic of rank
    :func:`percentile_rank` ``(NN, n)``."""
    v = np.asarray(values, np.float64).ravel()
    if name not in STATISTICS:
        raise unknown_name("statistic", name, STATISTICS)
    if not len(v):
        raise ValueError(f"the {name} of no values is undefined")
    if name == "mean":
        return float(np.mean(v))
    if name == "max":
        return float(np.max(v))
    k = percentile_rank(int(name[1:]), len(v)) - 1
    return float(np.partition(v, k)[k])


def statistics(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Every one of :data:`STATISTICS` over per-sample ``values``, in that order."""
    return {name: statistic(values, name) for name in STATISTICS}


def pareto_front(
    points: np.ndarray, maximize: Sequence[bool] | None = None, rank: Sequence[Any] | None = None
) -> np.ndarray:
    """The Pareto front as hapi reports it everywhere (the search's summary and
    ``pareto.csv``, ``hapi plot``): the rows no other row dominates (:func:`pareto_mask`),
    and of rows with equal values only one, the first by ``rank`` (e.g. fewest exits, then
    earliest trial; by default the first row)."""
    pts = np.asarray(points, float)
    if pts.ndim != 2:
        pts = pts.reshape(len(pts), -1) if pts.size else pts.reshape(len(pts), 0)
    keep = pareto_mask(pts, maximize)
    ranks = list(range(len(pts))) if rank is None else list(rank)
    best: dict[tuple[float, ...], int] = {}
    for i in np.flatnonzero(keep):
        v = tuple(pts[i].tolist())
        if v not in best or ranks[i] < ranks[best[v]]:
            best[v] = int(i)
    out = np.zeros(len(pts), bool)
    out[list(best.values())] = True
    return out


def pareto_mask(points: np.ndarray, maximize: Sequence[bool] | None = None) -> np.ndarray:
    """True for the rows of ``points`` that no other row dominates.

    Every column is minimised unless ``maximize`` marks it. A row dominates another when it
    is at least as good on every column and better on one, so exact duplicates of a front
    row all stay on the front. Rows are visited in lexicographic order, so a row can only be
    dominated by one already on the front: one vectorised comparison per row.
    """
    pts = np.asarray(points, float)
    if pts.ndim != 2:
        pts = pts.reshape(len(pts), -1)
    if maximize is not None:
        pts = np.where(np.asarray(maximize, bool), -pts, pts)
    n, d = pts.shape
    keep = np.zeros(n, bool)
    front = np.empty((n, d))
    size = 0
    for i in np.lexsort(pts.T[::-1]):
        p = pts[i]
        f = front[:size]
        if not np.any(np.all(f <= p, axis=1) & np.any(f < p, axis=1)):
            front[size] = p
            size += 1
            keep[i] = True
    return keep
