"""Service-level objectives and search objectives, parsed from the command line.

``--slo METRIC=VALUE[UNIT]`` (DESIGN 2.3). Metrics and their canonical units:

==============  ==================  ==========  ============
SLO name        metric column       canonical   units
==============  ==================  ==========  ============
latency         latency_ms (mean)   ms          us ms s
p90_latency     p90_latency_ms      ms          us ms s
p99_latency     p99_latency_ms      ms          us ms s
max_latency     max_latency_ms      ms          us ms s
energy          energy_mj (mean)    mJ          uJ mJ J
accuracy        accuracy            0..1        (none) %
size            size_mb             MB          KB MB GB
==============  ==================  ==========  ============

Every SLO is an upper bound except ``accuracy`` (a lower bound). A value without a unit is
in the canonical unit. The column names (``latency_ms``...) are accepted as metric names too.
Both follow :data:`hapi_dse.cost.metrics.METRIC_TABLE`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hapi_dse.cost.metrics import EXAMPLE, METRIC_TABLE, UNIT_HELP, UNITS, find_metric
from hapi_dse.errors import UsageError, unknown_name

_PATTERN = re.compile(
    r"^\s*([A-Za-z0-9_]+)\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"\s*([^\s\d.][^\s]*)?\s*$"
)
_SLO_HELP = "expected METRIC=NUMBER[UNIT], e.g. latency=50ms or accuracy=92%"
_SLO_NAMES = [m.name for m in METRIC_TABLE if m.slo]
_OBJECTIVE_NAMES = [m.name for m in METRIC_TABLE if m.objective]


def _maximized(column: str) -> bool:
    found = find_metric(column)
    return found is not None and found.maximize


@dataclass(frozen=True)
class SLO:
    """A bound on one metric, in canonical units (ms, mJ, fraction 0..1, MB)."""

    metric: str  # metric column, e.g. "latency_ms"
    value: float
    text: str = ""

    @property
    def upper(self) -> bool:
        """True for an upper bound (``metric <= value``), False for accuracy (``>=``)."""
        return not _maximized(self.metric)

    @property
    def name(self) -> str:
        """The constraint name used in ``constraint_<name>`` columns: the metric column."""
        return self.metric

    def violation(self, metrics: Mapping[str, float]) -> float:
        """How far ``metrics`` break this SLO, in its units; ``<= 0`` means it holds."""
        v = float(metrics[self.metric])
        return v - self.value if self.upper else self.value - v

    def describe(self) -> str:
        """E.g. ``latency_ms <= 50``."""
        return f"{self.metric} {'<=' if self.upper else '>='} {self.value:g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "bound": "max" if self.upper else "min",
            "value": self.value,
            "text": self.text,
        }


def parse_slo(text: str) -> SLO:
    """Parse ``METRIC=VALUE[UNIT]``; raise :class:`UsageError` saying what was expected."""
    m = _PATTERN.match(text)
    if not m:
        raise UsageError(f"--slo {text!r}: {_SLO_HELP}")
    raw_name, raw_value, raw_unit = m.group(1), m.group(2), (m.group(3) or "")
    found = find_metric(raw_name)
    if found is None or not found.slo:
        e = unknown_name("SLO metric", raw_name, _SLO_NAMES)
        raise UsageError(f"--slo {text!r}: {e}")
    name, column, kind = found.name, found.column, found.kind
    value = float(raw_value)
    if not math.isfinite(value * (UNITS[kind].get(raw_unit.lower(), 1.0) if raw_unit else 1.0)):
        raise UsageError(
            f"--slo {text!r}: {raw_value} is too large to be a number; give a finite bound, "
            f"e.g. {name}={EXAMPLE[kind]}"
        )
    if raw_unit:
        factor = UNITS[kind].get(raw_unit.lower())
        if factor is None:
            raise UsageError(
                f"--slo {text!r}: unit {raw_unit!r} does not fit {name}; expected "
                f"{UNIT_HELP[kind]}, e.g. {name}={EXAMPLE[kind]}"
            )
        value *= factor
    if kind == "fraction" and not 0.0 <= value <= 1.0:
        raise UsageError(
            f"--slo {text!r}: accuracy must be a fraction 0..1 or a percentage 0..100%, "
            f"e.g. accuracy=0.92 or accuracy=92%"
        )
    if value < 0:
        raise UsageError(f"--slo {text!r}: {name} must be >= 0, but got {value:g}")
    return SLO(metric=column, value=value, text=text.strip())


def parse_slos(texts: Iterable[str]) -> list[SLO]:
    """Several ``--slo`` values; a metric given twice is an error."""
    slos = [parse_slo(t) for t in texts]
    seen: dict[str, str] = {}
    for s in slos:
        if s.metric in seen:
            raise UsageError(
                f"--slo {s.text!r}: {s.metric} is already bounded by --slo {seen[s.metric]!r}; "
                "give each metric once"
            )
        seen[s.metric] = s.text
    return slos


@dataclass(frozen=True)
class Objective:
    """One search objective: a metric column and its direction."""

    metric: str

    @property
    def maximize(self) -> bool:
        return _maximized(self.metric)

    @property
    def direction(self) -> str:
        return "maximize" if self.maximize else "minimize"


def parse_objectives(text: str) -> list[Objective]:
    """``accuracy,latency[,energy...]``: names as for ``--slo`` (plus ``goodput``)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if len(names) < 1:
        raise UsageError(
            f"--objectives {text!r}: expected comma-separated metrics, e.g. accuracy,latency"
        )
    out: list[Objective] = []
    for raw in names:
        found = find_metric(raw)
        if found is None or not found.objective:
            e = unknown_name("objective", raw, _OBJECTIVE_NAMES)
            raise UsageError(f"--objectives {text!r}: {e}")
        obj = Objective(found.column)
        if obj in out:
            raise UsageError(f"--objectives {text!r}: {raw} is listed twice")
        out.append(obj)
    return out


def default_objectives(has_energy: bool) -> list[Objective]:
    """``accuracy,latency``, plus ``energy`` when the profile table has energy figures."""
    return parse_objectives("accuracy,latency,energy" if has_energy else "accuracy,latency")
