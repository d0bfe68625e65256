"""Every trial of a search scored, the feasible Pareto front and the chosen design.

:func:`collect` is the pure part of a search's results: it re-scores each trial's design
with the cost model (cheap and deterministic, so results never depend on what a storage
kept), marks feasibility and the front, scores the front on the test split and picks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.cost import SLO, Design, Objective, find_metric, pareto_front
from hapi_dse.search.picking import default_rule, parse_pick, pick


@dataclass
class TrialRecord:
    """One trial of a search, scored by the cost model.

    ``number``: the trial's number in the study (``trials.csv``'s ``trial``). ``state``:
    Optuna's (``COMPLETE``, ``FAIL``...). ``design``: the design it proposed, ``metrics``
    its predicted metrics on val (``accuracy``, ``latency_ms``, ``energy_mj``...; both
    ``None`` unless complete). ``violations``: per SLO, how far the metrics are over the
    bound (<= 0: met). ``feasible``: every SLO met. ``pareto``: on the feasible Pareto
    front. ``test``: the metrics on the test split and ``test_broken`` the SLOs they break
    (the front only). ``measured`` and ``measured_broken``: the same, measured on this
    machine by ``--verify`` (else ``None`` and empty)."""

    number: int
    state: str
    design: Design | None = None
    metrics: dict[str, float] | None = None
    violations: dict[str, float] = field(default_factory=dict)
    feasible: bool = False
    pareto: bool = False
    test: dict[str, float] | None = None
    test_broken: list[str] = field(default_factory=list)
    measured: dict[str, float] | None = None  # --verify: measured on val, this machine
    measured_broken: list[str] = field(default_factory=list)

    def objective_vector(self, objectives: Sequence[Objective]) -> list[float]:
        """Objective values, all turned into "smaller is better"."""
        assert self.metrics is not None
        return [
            -self.metrics[o.metric] if o.maximize else self.metrics[o.metric] for o in objectives
        ]


@dataclass
class DeviceResult:
    """One device's search: every trial, the feasible Pareto front and the chosen design.

    ``device`` and ``model_id``: what was searched. ``records``: every trial
    (:class:`TrialRecord`), in trial order. ``front``: the feasible Pareto front, fastest
    first. ``chosen``: the pick among the front (``None``: no design meets every SLO; then
    ``closest`` holds up to five designs nearest to meeting them, else it is empty;
    ``feasible`` says which). ``objectives``, ``slos`` and ``pick_rule``: what the search
    optimised, bounded and picked by. ``study_name``, ``storage`` (its URL without the
    password, ``None`` in memory), ``sampler``, ``population`` (NSGA-II) and ``new_trials``
    (run by this call; the rest were resumed): the Optuna study. ``table_source``: whether
    the device's table was ``measured`` or ``modelled``. ``inputs``: the files read, by
    name (statistics, table, space file). ``space_name`` and ``space_size``: the search
    space and its number of designs. ``timings``: seconds per step (``search_s``...).
    ``out_dir``: where the result was written (``None``: nowhere). ``verify`` and
    ``verify_dir``: what ``--verify`` measured, and where its exports and reports are.
    ``backbone``: the plain backbone (no exit) scored like every design, ``{"val": metrics,
    "test": metrics}``."""

    device: str
    model_id: str
    records: list[TrialRecord]
    front: list[TrialRecord]
    chosen: TrialRecord | None
    closest: list[TrialRecord]
    objectives: list[Objective]
    slos: list[SLO]
    pick_rule: str
    study_name: str
    storage: str | None
    sampler: str
    population: int | None
    new_trials: int
    table_source: str
    inputs: dict[str, Path]
    space_name: str
    space_size: int
    timings: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None
    verify: dict[str, Any] | None = None  # --verify: what was verified (search.json)
    verify_dir: Path | None = None  # --verify: exports and reports, moved into out_dir
    #: the plain backbone (no exit) scored like every design: {"val": metrics, "test": metrics}
    backbone: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return self.chosen is not None

    @property
    def complete(self) -> list[TrialRecord]:
        return [r for r in self.records if r.metrics is not None]


def collect(problem: Any, run: Any, cfg: Any) -> DeviceResult:
    """Score every trial, mark feasibility and the Pareto front, re-score it on test, pick."""
    from optuna.trial import TrialState

    t0 = time.perf_counter()
    records: list[TrialRecord] = []
    for t in sorted(run.trials, key=lambda t: t.number):
        rec = TrialRecord(number=t.number, state=t.state.name)
        if t.state == TrialState.COMPLETE:
            rec.design = problem.space.decode(t.params)
            rec.metrics = problem.val(rec.design)
            rec.violations = {s.name: s.violation(rec.metrics) for s in problem.slos}
            rec.feasible = all(v <= 0 for v in rec.violations.values())
        records.append(rec)
    objectives = problem.objectives
    # one record per design (the first trial that proposed it), then the front
    seen: set[Any] = set()
    candidates = []
    for r in records:
        if r.feasible and r.design is not None and r.design.key not in seen:
            seen.add(r.design.key)
            candidates.append(r)
    pts = np.array([r.objective_vector(objectives) for r in candidates]).reshape(
        len(candidates), len(objectives)
    )
    # equal objective values: the simplest design (fewest exits, then earliest trial)
    mask = pareto_front(pts, rank=[_simplicity(r) for r in candidates])
    # fastest first (mean latency, then accuracy, then the objectives)
    front = sorted(
        (r for r, k in zip(candidates, mask, strict=True) if k),
        key=lambda r: (
            _metric(r, "latency_ms"),
            -_metric(r, "accuracy"),
            *r.objective_vector(objectives),
        ),
    )
    for r in front:
        r.pareto = True
        assert r.design is not None
        r.test = problem.test(r.design)
        r.test_broken = [s.label() for s in problem.slos if s.violation(r.test) > 0]
    rule = cfg.pick or default_rule(objectives)
    parse_pick(rule)
    plain = Design(())
    backbone = {"val": problem.val(plain), "test": problem.test(plain)}
    chosen = pick(front, objectives, rule, backbone["val"])
    closest: list[TrialRecord] = []
    if chosen is None:
        done = [r for r in records if r.metrics is not None]
        done.sort(key=lambda r: (_violation_score(r, problem.slos), r.number))
        keys: set[Any] = set()
        for r in done:
            assert r.design is not None
            if r.design.key not in keys:
                keys.add(r.design.key)
                closest.append(r)
            if len(closest) == 5:
                break
    return DeviceResult(
        device=problem.device,
        model_id=problem.model_id,
        records=records,
        front=front,
        chosen=chosen,
        closest=closest,
        objectives=list(objectives),
        slos=list(problem.slos),
        pick_rule=rule,
        backbone=backbone,
        study_name=run.study_name,
        storage=run.storage,
        sampler=run.sampler,
        population=run.population,
        new_trials=run.new_trials,
        table_source=problem.table_source,
        inputs=dict(problem.inputs),
        space_name=problem.space.space.name,
        space_size=problem.space.size(),
        timings={"collect_s": time.perf_counter() - t0, "evaluations": problem.val.misses},
    )


def speedup(result: DeviceResult, r: TrialRecord | None) -> float | None:
    """The plain backbone's predicted mean latency (val) over the design's."""
    if r is None or r.metrics is None or not result.backbone:
        return None
    lat = r.metrics["latency_ms"]
    return result.backbone["val"]["latency_ms"] / lat if lat > 0 else None


def broken_slos(r: TrialRecord, slos: Sequence[SLO]) -> list[str]:
    """The SLOs a scored trial breaks, each with its value and how far off it is."""
    out = []
    assert r.metrics is not None
    for s in slos:
        if s.violation(r.metrics) > 0:
            v = r.metrics[s.metric]
            rel = abs(s.violation(r.metrics)) / max(abs(s.value), 1e-12)
            out.append(
                f"{s.metric} {fmt_metric(s.metric, v)} {'>' if s.upper else '<'} "
                f"{fmt_metric(s.metric, s.value)} (off by {rel:.0%})"
            )
    return out


def _violation_score(r: TrialRecord, slos: Sequence[SLO]) -> float:
    """How far a design is from feasible: the SLO overshoots, each relative to its bound."""
    return sum(max(r.violations[s.name], 0.0) / max(abs(s.value), 1e-12) for s in slos)


def _metric(r: TrialRecord, name: str) -> float:
    assert r.metrics is not None
    return r.metrics[name]


def _simplicity(r: TrialRecord) -> tuple[int, int]:
    return (len(r.design.exits) if r.design else 0, r.number)


def fmt_metric(column: str, v: float) -> str:
    found = find_metric(column)
    return found.format(v) if found is not None else f"{v:.3g}"
