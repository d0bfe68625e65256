"""What a search is asked to do: :class:`SearchConfig`, a library config.

SLOs and objectives arrive parsed (:class:`~hapi_dse.cost.SLO`,
:class:`~hapi_dse.cost.Objective`): the CLI parses ``--slo`` and ``--objectives`` once, and
library callers build them with :func:`~hapi_dse.cost.parse_slos` /
:func:`~hapi_dse.cost.parse_objectives` or directly. :meth:`SearchConfig.settings` records
them in ``search.json`` as the command line spells them (``"latency=50ms"``,
``"accuracy,latency"``).

>>> from hapi_dse.cost import parse_objectives, parse_slos
>>> cfg = SearchConfig(
...     devices=("pixel6",),
...     slos=tuple(parse_slos(["latency=50ms"])),
...     objectives=tuple(parse_objectives("accuracy,latency")),
... )
>>> cfg.settings()["slos"], cfg.settings()["objectives"]
(['latency=50ms'], 'accuracy,latency')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hapi_dse.cost import SLO, Objective, find_metric
from hapi_dse.errors import SettingError, unknown_name
from hapi_dse.provenance import redact
from hapi_dse.search.sampling import SAMPLERS
from hapi_dse.search.storage import check_journal

#: the most trials a study may be asked to hold: the GA samplers re-read every trial each
#: generation (20k trials took minutes), and 10**23 ran until killed
MAX_TRIALS = 1_000_000


@dataclass
class SearchConfig:
    """Everything a search was asked to do (the CLI only fills this in)."""

    devices: tuple[str, ...]
    model: str | None = None
    profiles: str | None = None
    space: str = "default"
    slos: tuple[SLO, ...] = ()
    objectives: tuple[Objective, ...] | None = None  # None: accuracy, latency (+ energy)
    sampler: str = "nsga2"
    trials: int = 1000
    timeout: float | None = None
    seed: int = 0
    storage: str | None = None
    study: str | None = None
    jobs: int = 1
    out: Path | None = None
    pick: str | None = None
    population: int | None = None
    verify: int = 0  # export and measure this many Pareto designs near the pick, re-pick
    overwrite: bool = False  # replace previous results in <out>/<device>/

    def settings(self) -> dict[str, Any]:
        """The settings as ``search.json`` records them: plain JSON values, SLOs and
        objectives as typed on the command line, the storage URL without its password."""
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if k == "slos":
                v = [slo_text(s) for s in v]
            elif k == "objectives":
                v = objectives_text(v)
            elif isinstance(v, Path):
                v = str(v)
            if k != "storage":
                out[k] = v
        return out | {"storage": redact(self.storage, secrets_of=self.storage)}

    def check(self) -> None:
        """Refuse a config that cannot run, saying which setting and why."""
        check_config(self)


def number_text(value: float) -> str:
    """The shortest text of ``value`` that reads back as it, without a trailing ``.0``."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def slo_text(slo: SLO) -> str:
    """``--slo`` as typed (``latency=50ms``); for an SLO built in code, its canonical spelling
    (``latency=50ms``, ``accuracy=0.9``), which parses back to the same bound."""
    if slo.text:
        return slo.text
    m = find_metric(slo.metric)
    name, unit = (m.name, m.unit) if m is not None else (slo.metric, "")
    if slo.relative is not None:
        return f"{name}={number_text(slo.relative)}x"
    return f"{name}={number_text(slo.value)}{unit}"


def objectives_text(objectives: Sequence[Objective] | None) -> str | None:
    """``--objectives`` as a comma-separated list of metric names (``accuracy,latency``)."""
    if objectives is None:
        return None
    names = []
    for o in objectives:
        m = find_metric(o.metric)
        names.append(m.name if m is not None else o.metric)
    return ",".join(names)


def check_config(cfg: SearchConfig) -> None:
    """Refuse a config that cannot run, saying which setting and why."""
    if cfg.sampler not in SAMPLERS:
        raise unknown_name("sampler", cfg.sampler, SAMPLERS)
    if cfg.trials < 1:
        raise SettingError("trials", f"must be >= 1, but got {cfg.trials}")
    if cfg.trials > MAX_TRIALS:
        raise SettingError(
            "trials", f"must be <= {MAX_TRIALS} (the most a study may hold), but got {cfg.trials}"
        )
    if cfg.jobs < 1:
        raise SettingError("jobs", f"must be >= 1, but got {cfg.jobs}")
    if cfg.timeout is not None and not (math.isfinite(cfg.timeout) and cfg.timeout > 0):
        raise SettingError("timeout", f"must be > 0 seconds, but got {cfg.timeout:g}")
    if not cfg.devices:
        raise SettingError("devices", ": expected one or more device names, e.g. pixel6")
    if cfg.study is not None and cfg.storage is None and cfg.jobs == 1:
        raise SettingError(
            "study", "names a study in {storage}; give {storage} URL too", ("storage",)
        )
    check_journal(cfg.storage)  # before any search, changing nothing
    if not all(isinstance(s, SLO) for s in cfg.slos):
        raise TypeError(
            f"SearchConfig.slos must hold SLO objects, but got {cfg.slos!r}; parse strings "
            "such as 'latency=50ms' with hapi_dse.cost.parse_slos"
        )
    if cfg.objectives is not None and (
        isinstance(cfg.objectives, str)
        or not cfg.objectives
        or not all(isinstance(o, Objective) for o in cfg.objectives)
    ):
        raise TypeError(
            "SearchConfig.objectives must be None (the defaults) or a non-empty tuple of "
            f"Objective objects, but got {cfg.objectives!r}; parse a string such as "
            "'accuracy,latency' with hapi_dse.cost.parse_objectives"
        )
    if cfg.verify < 0:
        raise SettingError("verify", f"must be >= 0, but got {cfg.verify}")


__all__ = [
    "MAX_TRIALS",
    "SearchConfig",
    "check_config",
    "objectives_text",
    "slo_text",
]
