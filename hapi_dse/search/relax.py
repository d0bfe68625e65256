"""What to relax when no design meets every SLO: the bounds the closest trial would meet.

A search with no feasible design (DESIGN 2.3: a normal outcome) says how far its closest
trial is from each SLO it breaks and which ``--slo`` would have admitted it, both as an
absolute bound and relative to the plain backbone (``latency=0.6x``), which means the same
on a faster or a slower machine. The console prints it and ``search.json`` records it, so
that ``hapi export`` of the result can repeat it.

>>> loosen(0.6161, upper=True, digits=3), loosen(0.91234, upper=False, digits=3)
(0.617, 0.912)
"""

from __future__ import annotations

import math
from typing import Any

from hapi_dse.cost import find_metric
from hapi_dse.search.config import number_text
from hapi_dse.search.records import DeviceResult


def loosen(value: float, *, upper: bool, digits: int) -> float:
    """``value`` rounded to ``digits`` significant digits away from the bound's side: up for
    an upper bound, down for a lower one, so that ``value`` itself meets the result."""
    if value <= 0 or not math.isfinite(value):
        return value
    step = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    decimals = max(0, -round(math.log10(step)))
    n = math.ceil(value / step) if upper else math.floor(value / step)
    out = float(f"{n * step:.{decimals}f}")
    # the division and the printing round: step once more if that crossed the value
    if upper and out < value:
        out = float(f"{(n + 1) * step:.{decimals}f}")
    elif not upper and out > value:
        out = float(f"{(n - 1) * step:.{decimals}f}")
    return out


def relax_slos(result: DeviceResult) -> dict[str, Any] | None:
    """For a result with no feasible design: its closest trial and, for each SLO that trial
    breaks (as measured, after ``--verify``), an ``--slo`` it would meet (``slos``) and the
    same relative to the plain backbone's predicted value (``relative_slos``). None when a
    design is feasible or no trial was scored."""
    if result.chosen is not None or not result.closest:
        return None
    r = result.closest[0]
    assert r.metrics is not None
    metrics = {**r.metrics, **(r.measured or {})}  # --verify: what the SLOs were judged on
    backbone = result.backbone.get("val", {}) if result.backbone else {}
    absolute: list[str] = []
    relative: list[str] = []
    for s in result.slos:
        if s.violation(metrics) <= 0:
            continue
        found = find_metric(s.metric)
        name = found.name if found is not None else s.metric
        v = float(metrics[s.metric])
        if found is not None and found.kind == "fraction":  # accuracy, in %
            absolute.append(f"{name}={number_text(loosen(100 * v, upper=s.upper, digits=3))}%")
        else:
            unit = found.unit if found is not None else ""
            absolute.append(f"{name}={number_text(loosen(v, upper=s.upper, digits=3))}{unit}")
        base = backbone.get(s.metric)
        if base is not None and base > 0 and v > 0:
            factor = v / base
            digits = 3 if factor >= 1 else 2
            relative.append(f"{name}={number_text(loosen(factor, upper=s.upper, digits=digits))}x")
    return {"trial": r.number, "slos": absolute, "relative_slos": relative}


def relax_line(relax: dict[str, Any] | None) -> str:
    """``relax an SLO (the closest, trial 12, meets --slo p99_latency=0.617ms, or
    p99_latency=0.61x of the plain backbone's)``; ``relax an SLO`` when nothing is known."""
    flags = relax_flags(relax)
    if flags is None or relax is None:
        return "relax an SLO"
    return f"relax an SLO (the closest design, trial {relax['trial']}, meets {flags})"


def relax_flags(relax: Any) -> str | None:
    """``--slo latency=0.2ms, or --slo latency=0.61x relative to the plain backbone``: the
    ``relax`` of :func:`relax_slos` (as search.json records it) as command-line flags; None
    when it holds no SLO text (or is not what relax_slos writes)."""

    def texts(key: str) -> list[str]:
        got = relax.get(key) if isinstance(relax, dict) else None
        if isinstance(got, list) and all(isinstance(t, str) for t in got):
            return got
        return []

    slos = texts("slos")
    if not slos:
        return None
    rel = texts("relative_slos")
    alt = f", or {' '.join(f'--slo {t}' for t in rel)} relative to the plain backbone"
    return " ".join(f"--slo {t}" for t in slos) + (alt if rel else "")


__all__ = ["loosen", "relax_flags", "relax_line", "relax_slos"]
