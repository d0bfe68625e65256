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

A **relative** SLO, ``METRIC=FACTORx`` (``latency=0.6x``, ``accuracy=0.99x``), is that factor
times the plain backbone's predicted value of the metric on the device searched, so that one
command means the same on a fast machine and a slow one. It is resolved to an absolute bound
per device (:meth:`SLO.resolve`) before the study starts; ``text`` keeps what was typed.

>>> slo = parse_slo("latency=0.6x")
>>> slo.resolved, slo.label()
(False, 'latency <= 0.6x backbone')
>>> slo = slo.resolve({"latency_ms": 0.72})
>>> round(slo.value, 6), slo.label()
(0.432, 'latency <= 0.6x backbone = 0.432 ms')
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from hapi_dse.cost.metrics import EXAMPLE, METRIC_TABLE, UNIT_HELP, UNITS, find_metric
from hapi_dse.errors import ArtefactError, SettingError, unknown_name

_PATTERN = re.compile(
    r"^\s*([A-Za-z0-9_]+)\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"\s*([^\s\d.][^\s]*)?\s*$"
)
_SLO_HELP = "expected METRIC=NUMBER[UNIT], e.g. latency=50ms or accuracy=92%"
# a value that ends in x but is no FACTORx ('x', '1.5xx', '0.6 x x'): say what a factor is
_LOOKS_RELATIVE = re.compile(r"^[^=]*=[^=]*x\s*$", re.IGNORECASE)
_SLO_NAMES = [m.name for m in METRIC_TABLE if m.slo]
_OBJECTIVE_NAMES = [m.name for m in METRIC_TABLE if m.objective]


def _relative_help(name: str = "latency") -> str:
    return f"e.g. {name}=0.6x (0.6 times the plain backbone's predicted {name})"


def _maximized(column: str) -> bool:
    found = find_metric(column)
    return found is not None and found.maximize


@dataclass(frozen=True)
class SLO:
    """A bound on one metric, in canonical units (ms, mJ, fraction 0..1, MB).

    A relative SLO (``latency=0.6x``) holds its ``relative`` factor; :meth:`resolve` sets its
    ``value`` to that factor times the plain backbone's predicted value (``baseline``).
    Until then ``value`` is NaN and the SLO cannot judge a design."""

    metric: str  # metric column, e.g. "latency_ms"
    value: float
    text: str = ""
    relative: float | None = None  # METRIC=FACTORx: the factor of the plain backbone's value
    baseline: float | None = None  # the backbone's predicted value it was resolved against

    @property
    def resolved(self) -> bool:
        """False only for a relative SLO not yet resolved against a backbone."""
        return self.relative is None or self.baseline is not None

    def resolve(self, backbone: Mapping[str, float]) -> SLO:
        """This SLO as an absolute bound: a relative one becomes its factor times
        ``backbone[metric]`` (the plain backbone's predicted metrics on the device searched);
        an absolute one is returned as it is."""
        if self.relative is None:
            return self
        base = float(backbone[self.metric])
        return replace(self, value=self.relative * base, baseline=base)

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
        if not self.resolved:
            raise SettingError(
                "slos",
                f"{self.text or self.label()!r} is relative to the plain backbone; "
                "resolve it against the backbone's predicted metrics first (SLO.resolve)",
            )
        v = float(metrics[self.metric])
        return v - self.value if self.upper else self.value - v

    def describe(self) -> str:
        """E.g. ``latency_ms <= 50``."""
        return f"{self.metric} {'<=' if self.upper else '>='} {self.value:g}"

    def label(self) -> str:
        """How the console names it: as typed (``latency=50ms``), or for a relative SLO the
        bound it stands for (``latency <= 0.6x backbone = 0.432 ms``)."""
        if self.relative is None:
            return self.text or self.describe()
        found = find_metric(self.metric)
        name = found.name if found is not None else self.metric
        head = f"{name} {'<=' if self.upper else '>='} {self.relative:g}x backbone"
        if not self.resolved:
            return head
        if found is not None and found.kind == "fraction":
            return f"{head} = {found.format(self.value)}"
        unit = f" {found.unit}" if found is not None and found.unit else ""
        return f"{head} = {self.value:.4g}{unit}"

    def to_dict(self) -> dict[str, Any]:
        """The SLO as ``search.json`` and ``design.json`` record it: ``value`` is the absolute
        bound; a relative SLO adds its factor (``relative``) and the backbone's predicted
        value it was resolved against (``baseline``)."""
        out: dict[str, Any] = {
            "metric": self.metric,
            "bound": "max" if self.upper else "min",
            "value": self.value,
            "text": self.text,
        }
        if self.relative is not None:
            out.update(relative=self.relative, baseline=self.baseline)
        return out

    @classmethod
    def from_dict(cls, data: Any, name: str = "SLO") -> SLO:
        """An SLO as :meth:`to_dict` records it (the ``slos`` of ``search.json``,
        ``design.json`` and an export's metadata), checked: ``metric`` an SLO metric,
        ``value`` a finite number, ``bound`` (if given) the metric's direction, ``text`` a
        string, and for a relative SLO ``relative`` a finite factor > 0 and ``baseline`` the
        finite backbone value it was resolved against (a recorded SLO is resolved).

        Anything else raises :class:`ArtefactError` naming the field as ``{name}.FIELD``
        (e.g. ``slos[0].value``), for the reader to say which file it is in.
        """
        if not isinstance(data, Mapping):
            raise ArtefactError(
                f"{name} is {_short(data)}, expected an object {{metric, bound, value, text}} "
                "as 'hapi search' records an SLO"
            )
        raw = data.get("metric")
        found = find_metric(raw) if isinstance(raw, str) else None
        if found is None or not found.slo:
            columns = ", ".join(m.column for m in METRIC_TABLE if m.slo)
            raise ArtefactError(f"{name}.metric is {_short(raw)}, expected one of {columns}")
        column = found.column

        def number(key: str, rule: str, positive: bool = False) -> float:
            v = data.get(key)
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not math.isfinite(v)
                or (positive and v <= 0)
            ):
                raise ArtefactError(f"{name}.{key} is {_short(v)}, expected {rule}")
            return float(v)

        value = number("value", f"a finite value (the bound on {column})")
        bound = "min" if found.maximize else "max"
        if data.get("bound", bound) != bound:
            raise ArtefactError(
                f"{name}.bound is {_short(data.get('bound'))}, expected {_short(bound)}: {column} "
                f"has {'a lower' if found.maximize else 'an upper'} bound"
            )
        text = data.get("text", "")
        if not isinstance(text, str):
            raise ArtefactError(f"{name}.text is {_short(text)}, expected a string")
        if data.get("relative") is None and data.get("baseline") is None:
            return cls(metric=column, value=value, text=text)
        relative = number("relative", f"a finite factor > 0 of the plain backbone's {column}", True)
        baseline = number("baseline", f"a finite number (the plain backbone's {column})")
        return cls(column, value, text, relative=relative, baseline=baseline)


def _short(value: Any) -> str:
    """A stored value as an error message quotes it: JSON, at most 60 characters."""
    return json.dumps(value, default=str)[:60]


def parse_slo(text: str) -> SLO:
    """Parse ``METRIC=VALUE[UNIT]`` or ``METRIC=FACTORx`` (relative to the plain backbone,
    unresolved); raise :class:`SettingError` (``slos``) saying what was expected."""
    m = _PATTERN.match(text)
    unit = (m.group(3) or "").lower() if m else ""
    if not m or (unit.startswith("x") and unit != "x"):
        if _LOOKS_RELATIVE.match(text):
            raise SettingError("slos", f"{text!r}: expected METRIC=FACTORx, {_relative_help()}")
        raise SettingError("slos", f"{text!r}: {_SLO_HELP}")
    raw_name, raw_value, raw_unit = m.group(1), m.group(2), (m.group(3) or "")
    found = find_metric(raw_name)
    if found is None or not found.slo:
        e = unknown_name("SLO metric", raw_name, _SLO_NAMES)
        raise SettingError("slos", f"{text!r}: {e}")
    name, column, kind = found.name, found.column, found.kind
    value = float(raw_value)
    if raw_unit.lower() == "x":
        if not (math.isfinite(value) and value > 0):
            raise SettingError(
                "slos",
                f"{text!r}: a relative SLO's factor must be a finite number > 0, but got "
                f"{raw_value}; {_relative_help(name)}",
            )
        return SLO(metric=column, value=math.nan, text=text.strip(), relative=value)
    if not math.isfinite(value * (UNITS[kind].get(raw_unit.lower(), 1.0) if raw_unit else 1.0)):
        raise SettingError(
            "slos",
            f"{text!r}: {raw_value} is too large to be a number; give a finite bound, "
            f"e.g. {name}={EXAMPLE[kind]}",
        )
    if raw_unit:
        factor = UNITS[kind].get(raw_unit.lower())
        if factor is None:
            raise SettingError(
                "slos",
                f"{text!r}: unit {raw_unit!r} does not fit {name}; expected "
                f"{UNIT_HELP[kind]}, e.g. {name}={EXAMPLE[kind]}, or a factor x of the plain "
                f"backbone's, e.g. {name}=0.6x",
            )
        value *= factor
    if kind == "fraction" and not 0.0 <= value <= 1.0:
        raise SettingError(
            "slos",
            f"{text!r}: accuracy must be a fraction 0..1 or a percentage 0..100%, "
            f"e.g. accuracy=0.92 or accuracy=92%",
        )
    if value < 0:
        raise SettingError("slos", f"{text!r}: {name} must be >= 0, but got {value:g}")
    return SLO(metric=column, value=value, text=text.strip())


def parse_slos(texts: Iterable[str]) -> list[SLO]:
    """Several ``--slo`` values; a metric given twice is an error."""
    slos = [parse_slo(t) for t in texts]
    seen: dict[str, str] = {}
    for s in slos:
        if s.metric in seen:
            raise SettingError(
                "slos",
                f"{s.text!r}: {s.metric} is already bounded by {{slos}} {seen[s.metric]!r}; "
                "give each metric once",
                ("slos",),
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
        raise SettingError(
            "objectives", f"{text!r}: expected comma-separated metrics, e.g. accuracy,latency"
        )
    out: list[Objective] = []
    for raw in names:
        found = find_metric(raw)
        if found is None or not found.objective:
            e = unknown_name("objective", raw, _OBJECTIVE_NAMES)
            raise SettingError("objectives", f"{text!r}: {e}")
        obj = Objective(found.column)
        if obj in out:
            raise SettingError("objectives", f"{text!r}: {raw} is listed twice")
        out.append(obj)
    return out


def default_objectives(has_energy: bool) -> list[Objective]:
    """``accuracy,latency``, plus ``energy`` when the profile table has energy figures."""
    return parse_objectives("accuracy,latency,energy" if has_energy else "accuracy,latency")
