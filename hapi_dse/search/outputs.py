"""What a search leaves behind (DESIGN 2.3): ``trials.csv``, ``pareto.csv``, ``design.json``,
``search.json`` in ``<out>/<device>/``, and the console summary.

The pure part (:func:`collect`, :func:`pareto_mask`, :func:`pick`) turns trials into rows;
the writers only format them. Metrics are recomputed from each trial's parameters with the
cost model (cheap and deterministic), so the files never depend on what a storage kept.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.cost import METRICS, SLO, Design, Objective, parse_objectives
from hapi_dse.errors import UsageError
from hapi_dse.provenance import SCHEMA_VERSION, atomic_dir, provenance, write_json, write_text
from hapi_dse.search.verify import MEASURED_COLUMNS

PICK_RULES = (
    "accuracy",
    "latency",
    "p90_latency",
    "p99_latency",
    "max_latency",
    "energy",
    "size",
    "goodput",
    "knee",
    "iso_accuracy",
)
#: ``--pick iso_accuracy[:D]``: the largest drop from the plain backbone's val accuracy, pp
ISO_ACCURACY_DROP_PP = 0.5


def parse_pick(rule: str) -> tuple[str, float | None]:
    """``--pick RULE``: the rule name and, for ``iso_accuracy[:D]``, the drop D in pp."""
    name, sep, arg = rule.partition(":")
    if name not in PICK_RULES:
        from hapi_dse.errors import unknown_name

        raise unknown_name("--pick rule", name, PICK_RULES)
    if name != "iso_accuracy":
        if sep:
            raise UsageError(f"--pick {rule}: only iso_accuracy takes a value (iso_accuracy:D)")
        return name, None
    if not sep:
        return name, ISO_ACCURACY_DROP_PP
    try:
        drop = float(arg)
    except ValueError:
        drop = float("nan")
    if not (math.isfinite(drop) and 0 <= drop <= 100):
        raise UsageError(
            f"--pick {rule}: D must be a number of percentage points in 0..100, "
            "e.g. iso_accuracy:0.5"
        )
    return name, drop


@dataclass
class TrialRecord:
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


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Non-dominated rows of ``points`` (minimise every column); duplicates all stay.

    Rows are visited in lexicographic order, so a row can only be dominated by one already on
    the front: one vectorised comparison against the front per row.
    """
    n, d = points.shape if points.ndim == 2 else (len(points), 0)
    keep = np.zeros(n, bool)
    front = np.empty((n, d))
    size = 0
    for i in np.lexsort(points.T[::-1]):
        p = points[i]
        f = front[:size]
        if not np.any(np.all(f <= p, axis=1) & np.any(f < p, axis=1)):
            front[size] = p
            size += 1
            keep[i] = True
    return keep


def pick(
    front: Sequence[TrialRecord],
    objectives: Sequence[Objective],
    rule: str,
    backbone: dict[str, float] | None = None,
) -> TrialRecord | None:
    """The chosen design among the feasible front: best ``rule`` metric, ties broken by the
    objectives in order; ``knee``: nearest to the ideal point, objectives scaled to 0..1;
    ``iso_accuracy:D``: the fastest (mean latency) whose val accuracy is at most D pp below
    the plain ``backbone``'s, else the most accurate."""
    if not front:
        return None
    name, drop = parse_pick(rule)
    if name == "iso_accuracy":
        assert backbone is not None and drop is not None
        floor = backbone["accuracy"] - drop / 100 - 1e-12
        near = [r for r in front if r.metrics is not None and r.metrics["accuracy"] >= floor]
        if not near:
            return pick(front, objectives, "accuracy")
        return pick(near, objectives, "latency")
    if rule == "knee":
        pts = np.array([r.objective_vector(objectives) for r in front])
        span = np.ptp(pts, axis=0)
        span[span == 0] = 1.0
        d = np.linalg.norm((pts - pts.min(axis=0)) / span, axis=1)
        return front[int(np.argmin(d))]
    obj = parse_objectives(rule)[0]

    def key(r: TrialRecord) -> tuple[float, ...]:
        assert r.metrics is not None
        first = -r.metrics[obj.metric] if obj.maximize else r.metrics[obj.metric]
        return (first, *r.objective_vector(objectives), r.number)

    return min(front, key=key)


def _violation_score(r: TrialRecord, slos: Sequence[SLO]) -> float:
    """How far a design is from feasible: the SLO overshoots, each relative to its bound."""
    return sum(max(r.violations[s.name], 0.0) / max(abs(s.value), 1e-12) for s in slos)


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
    front = [r for r, k in zip(candidates, pareto_mask(pts), strict=True) if k]
    # equal objective values: keep the simplest design (fewest exits, then earliest trial)
    best: dict[tuple[float, ...], TrialRecord] = {}
    for r in front:
        v = tuple(r.objective_vector(objectives))
        assert r.design is not None
        other = best.get(v)
        if other is None or (len(r.design.exits), r.number) < _simplicity(other):
            best[v] = r
    # fastest first (mean latency, then accuracy, then the objectives)
    front = sorted(
        best.values(),
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
        r.test_broken = [s.text or s.describe() for s in problem.slos if s.violation(r.test) > 0]
    rule = cfg.pick or _rule_name(objectives[0])
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


def _rule_words(rule: str) -> str:
    name, drop = parse_pick(rule)
    if name == "iso_accuracy":
        return f"fastest within {drop:g} pp of the plain backbone's val accuracy"
    return f"best {name}"


def _metric(r: TrialRecord, name: str) -> float:
    assert r.metrics is not None
    return r.metrics[name]


def _simplicity(r: TrialRecord) -> tuple[int, int]:
    return (len(r.design.exits) if r.design else 0, r.number)


def _rule_name(obj: Objective) -> str:
    return {
        "latency_ms": "latency",
        "p90_latency_ms": "p90_latency",
        "p99_latency_ms": "p99_latency",
        "max_latency_ms": "max_latency",
        "energy_mj": "energy",
        "size_mb": "size",
    }.get(obj.metric, obj.metric)


def check_pick(rule: str | None) -> None:
    if rule is not None:
        parse_pick(rule)


# -- files ------------------------------------------------------------------------------------
def _design_columns(r: TrialRecord) -> dict[str, Any]:
    d = r.design
    return {
        "policy": d.policy if d else "",
        "patience": d.patience if d and d.policy == "patience" else "",
        "n_exits": len(d.exits) if d else "",
        "exits": d.compact() if d else "",
    }


def trials_table(result: DeviceResult) -> tuple[list[str], list[dict[str, Any]]]:
    cons = [f"constraint_{s.name}" for s in result.slos]
    header = [
        "trial",
        "state",
        "policy",
        "patience",
        "n_exits",
        "exits",
        *METRICS,
        *cons,
        "feasible",
        "pareto",
    ]
    rows = []
    for r in result.records:
        row: dict[str, Any] = {"trial": r.number, "state": r.state, **_design_columns(r)}
        for m in METRICS:
            row[m] = r.metrics[m] if r.metrics else ""
        for s, c in zip(result.slos, cons, strict=True):
            row[c] = r.violations.get(s.name, "")
        row["feasible"] = r.feasible
        row["pareto"] = r.pareto
        rows.append(row)
    return header, rows


def pareto_table(result: DeviceResult) -> tuple[list[str], list[dict[str, Any]]]:
    header = [
        "trial",
        "policy",
        "patience",
        "n_exits",
        "exits",
        *METRICS,
        *[f"test_{m}" for m in METRICS],
        "test_breaks_slo",
        "test_broken_slos",
        *[f"measured_{m}" for m in MEASURED_COLUMNS],
        "measured_broken_slos",
        "chosen",
    ]
    rows = []
    for r in result.front:
        assert r.metrics is not None and r.test is not None
        row: dict[str, Any] = {"trial": r.number, **_design_columns(r)}
        row.update({m: r.metrics[m] for m in METRICS})
        row.update({f"test_{m}": r.test[m] for m in METRICS})
        row["test_breaks_slo"] = bool(r.test_broken)
        row["test_broken_slos"] = ";".join(r.test_broken)
        for m in MEASURED_COLUMNS:
            row[f"measured_{m}"] = r.measured[m] if r.measured else ""
        row["measured_broken_slos"] = ";".join(r.measured_broken)
        row["chosen"] = r is result.chosen
        rows.append(row)
    return header, rows


def _csv(header: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def design_json(result: DeviceResult, prov: dict[str, Any]) -> dict[str, Any]:
    r = result.chosen
    assert r is not None and r.design is not None and r.metrics is not None
    return {
        "schema_version": SCHEMA_VERSION,
        "model_id": result.model_id,
        "device": result.device,
        **r.design.to_dict(),
        "predicted_val": r.metrics,
        "predicted_test": r.test,
        "test_broken_slos": r.test_broken,
        "measured_val": r.measured,
        "slos": [s.to_dict() for s in result.slos],
        "objectives": [o.metric for o in result.objectives],
        "pick": result.pick_rule,
        "trial": r.number,
        "backbone_predicted": result.backbone or None,
        "predicted_speedup_over_backbone": speedup(result, r),
        "provenance": prov,
    }


def search_json(result: DeviceResult, cfg: Any, prov: dict[str, Any]) -> dict[str, Any]:
    complete = result.complete
    search_s = result.timings.get("search_s", 0.0)
    return {
        "schema_version": SCHEMA_VERSION,
        "model_id": result.model_id,
        "device": result.device,
        "table_source": result.table_source,
        "space": {"name": result.space_name, "designs": result.space_size},
        "sampler": {"name": result.sampler, "population": result.population, "seed": cfg.seed},
        "storage": result.storage,
        "study": result.study_name,
        "objectives": [{"metric": o.metric, "direction": o.direction} for o in result.objectives],
        "slos": [s.to_dict() for s in result.slos],
        "pick": result.pick_rule,
        "trials": {
            "requested": cfg.trials,
            "total": len(result.records),
            "complete": len(complete),
            "this_run": result.new_trials,
            "feasible": sum(r.feasible for r in complete),
            "pareto": len(result.front),
            "distinct_designs": len({r.design.key for r in complete if r.design}),
        },
        "feasible": result.feasible,
        "chosen_trial": result.chosen.number if result.chosen else None,
        "verify": result.verify,
        "closest": [
            {
                "trial": r.number,
                "exits": r.design.compact() if r.design else "",
                "broken": _broken(r, result.slos),
            }
            for r in result.closest
        ],
        "timings": {
            **result.timings,
            "trials_per_s": result.new_trials / search_s if search_s > 0 else None,
        },
        "provenance": prov,
    }


def write_results(result: DeviceResult, out_dir: Path, cfg: Any) -> None:
    """Write the four files into ``out_dir`` at once (the directory is swapped in whole)."""
    prov = provenance(
        seed=cfg.seed, inputs=result.inputs, settings=cfg.settings(), libraries=("numpy", "optuna")
    )
    with atomic_dir(out_dir, kind="search", overwrite=cfg.overwrite) as tmp:
        write_text(tmp / "trials.csv", _csv(*trials_table(result)))
        write_text(tmp / "pareto.csv", _csv(*pareto_table(result)))
        if result.chosen is not None:
            write_json(tmp / "design.json", design_json(result, prov))
        write_json(tmp / "search.json", search_json(result, cfg, prov))
        if result.verify_dir is not None:
            shutil.move(str(result.verify_dir), str(tmp / "verify"))
    result.out_dir = out_dir


# -- console ----------------------------------------------------------------------------------
def _broken(r: TrialRecord, slos: Sequence[SLO]) -> list[str]:
    out = []
    assert r.metrics is not None
    for s in slos:
        if s.violation(r.metrics) > 0:
            v = r.metrics[s.metric]
            rel = abs(s.violation(r.metrics)) / max(abs(s.value), 1e-12)
            out.append(
                f"{s.metric} {_fmt(s.metric, v)} {'>' if s.upper else '<'} "
                f"{_fmt(s.metric, s.value)} (off by {rel:.0%})"
            )
    return out


def _fmt(metric: str, v: float) -> str:
    if metric == "accuracy":
        return f"{100 * v:.2f}%"
    if math.isinf(v):
        return "inf"
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = [
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    for r in rows:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)


def _spread(items: list[TrialRecord], k: int) -> list[TrialRecord]:
    """At most ``k`` items, evenly spaced along the list (first and last kept)."""
    if len(items) <= k:
        return items
    idx = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in idx]


def console_report(result: DeviceResult, max_rows: int = 12) -> str:
    """The Pareto table and the chosen design (or the closest designs when none fits)."""
    complete = result.complete
    n_feasible = sum(r.feasible for r in complete)
    slos = ", ".join(s.text or s.describe() for s in result.slos) or "none"
    source = f", {result.table_source} table" if result.table_source else ""
    lines = [
        f"{result.device} ({result.model_id}{source}): {len(complete)} trials, "
        f"{n_feasible} feasible, {len(result.front)} on the Pareto front; SLOs: {slos}"
    ]
    metrics = ["accuracy", "latency_ms", "p99_latency_ms", "energy_mj", "size_mb"]
    extra = [o.metric for o in result.objectives if o.metric not in metrics]
    metrics += extra
    if result.front:
        header = ["trial", "exits", *metrics, "test_accuracy", "test"]
        shown = _spread(result.front, max_rows)
        chosen = result.chosen
        if chosen is not None and chosen not in shown:  # always show the chosen design
            at = result.front.index(chosen)
            nearest = min(range(len(shown)), key=lambda i: abs(result.front.index(shown[i]) - at))
            shown[nearest] = chosen
        rows = []
        for r in shown:
            assert r.metrics is not None and r.design is not None and r.test is not None
            mark = "*" if r is result.chosen else ""
            rows.append(
                [
                    f"{r.number}{mark}",
                    _short(r.design),
                    *[_fmt(m, r.metrics[m]) for m in metrics],
                    _fmt("accuracy", r.test["accuracy"]),
                    "breaks " + ",".join(r.test_broken) if r.test_broken else "ok",
                ]
            )
        lines.append(_table(rows, header))
        if len(shown) < len(result.front):
            lines.append(f"({len(result.front) - len(shown)} more designs in pareto.csv)")
    lines += _verify_lines(result)
    if result.chosen is not None:
        r = result.chosen
        assert r.metrics is not None and r.design is not None and r.test is not None
        pol = r.design.policy + (
            f"(p={r.design.patience})" if r.design.policy == "patience" else ""
        )
        lines.append(
            f"chosen for {result.device} ({_rule_words(result.pick_rule)} under the SLOs): trial "
            f"{r.number}, {pol} exits [{r.design.compact(digits=4) or 'none: plain backbone'}]: "
            f"accuracy {_fmt('accuracy', r.metrics['accuracy'])} (test "
            f"{_fmt('accuracy', r.test['accuracy'])}), latency {r.metrics['latency_ms']:.3g} ms "
            f"mean / {r.metrics['p99_latency_ms']:.3g} ms p99, energy "
            f"{r.metrics['energy_mj']:.3g} mJ, {r.metrics['size_mb']:.3g} MB"
        )
        up = speedup(result, r)
        if up is not None:
            b = result.backbone["val"]
            lines.append(
                f"predicted speed-up over the plain backbone: {up:.2f}x (backbone "
                f"{b['latency_ms']:.3g} ms mean, accuracy {_fmt('accuracy', b['accuracy'])})"
            )
        if r.test_broken:
            lines.append(f"warning: on the test split it breaks {', '.join(r.test_broken)}")
    elif result.verify and result.verify.get("verified_trials"):
        lines.append(
            f"no feasible design for {result.device}: no verified design meets every SLO "
            f"({slos}) as measured on this machine; verify more designs (--verify) or relax "
            "an SLO"
        )
    else:
        lines.append(
            f"no feasible design for {result.device}: no trial meets every SLO "
            f"({slos}). Closest designs:"
        )
        for r in result.closest:
            assert r.design is not None
            lines.append(
                f"  trial {r.number} [{_short(r.design)}]: " + "; ".join(_broken(r, result.slos))
            )
        lines.append("relax an SLO, widen the search space (--space) or add trials (--trials)")
    if result.out_dir is not None:
        lines.append(f"wrote {result.out_dir}/")
    return "\n".join(lines)


def _verify_lines(result: DeviceResult) -> list[str]:
    """What ``--verify`` measured: predicted vs measured latency per verified design."""
    v = result.verify or {}
    if not v.get("verified_trials"):
        return [f"--verify: {v['note']}"] if v.get("note") else []
    by_number = {r.number: r for r in result.front}
    lines = [
        f"verified {len(v['verified_trials'])} Pareto designs near the pick on this machine "
        "(val split, measured as 'hapi eval' does):"
    ]
    for n in v["verified_trials"]:
        r = by_number[n]
        assert r.metrics is not None and r.measured is not None
        verdict = "breaks " + ", ".join(r.measured_broken) if r.measured_broken else "meets SLOs"
        lines.append(
            f"  trial {n}: latency {r.measured['latency_ms']:.4g} ms measured / "
            f"{r.metrics['latency_ms']:.4g} predicted, p99 {r.measured['p99_latency_ms']:.4g} / "
            f"{r.metrics['p99_latency_ms']:.4g} ms: {verdict}"
        )
    if v.get("repicked") and v.get("chosen_trial") is not None:
        lines.append(f"re-picked as measured: trial {v['predicted_pick']} -> {v['chosen_trial']}")
    return lines


def _short(design: Design, width: int = 44) -> str:
    s = design.compact(digits=4) or "(backbone only)"
    if design.policy != "max_softmax":
        s = f"{design.policy[:3]}{design.patience or ''} {s}"
    return s if len(s) <= width else s[: width - 1] + "…"


__all__ = [
    "DeviceResult",
    "TrialRecord",
    "collect",
    "console_report",
    "pareto_mask",
    "pick",
    "write_results",
]
