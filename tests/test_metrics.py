"""The metric table is the one list of metrics: SLOs, objectives, picks, the cost model's
columns and plot labels all follow it; one Pareto mask serves search and plots."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hapi_dse.cost import (
    METRIC_TABLE,
    METRICS,
    Objective,
    find_metric,
    metric,
    pareto_mask,
    parse_objectives,
    parse_slo,
)
from hapi_dse.errors import UsageError
from hapi_dse.testing import synthetic_costs, synthetic_stats


def test_every_metric_is_a_cost_model_column() -> None:
    from hapi_dse.cost import CostModel, Design

    stats = synthetic_stats(n=200, seed=0)
    model = CostModel(stats, synthetic_costs(stats))
    row = model.evaluate(Design(exits=()))
    assert list(row) == list(METRICS) == [m.column for m in METRIC_TABLE]
    assert all(np.isfinite(v) for v in row.values())


@pytest.mark.parametrize("m", [m for m in METRIC_TABLE if m.slo], ids=lambda m: m.name)
def test_slo_metrics_parse_by_name_and_column_with_their_units(m) -> None:  # type: ignore[no-untyped-def]
    value = "0.5" if m.kind == "fraction" else "3"
    for name in (m.name, m.column, m.name.upper()):
        slo = parse_slo(f"{name}={value}")
        assert slo.metric == m.column and slo.upper == (not m.maximize)
    if m.unit:
        assert parse_slo(f"{m.name}=3{m.unit}").value == pytest.approx(3.0)


@pytest.mark.parametrize("m", [m for m in METRIC_TABLE if not m.slo], ids=lambda m: m.name)
def test_metrics_without_slo_are_refused_as_slos(m) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="unknown SLO metric"):
        parse_slo(f"{m.name}=1")


def test_objectives_follow_the_table() -> None:
    names = [m.name for m in METRIC_TABLE if m.objective]
    objs = parse_objectives(",".join(names))
    assert [o.metric for o in objs] == [metric(n).column for n in names]
    assert [o.maximize for o in objs] == [metric(n).maximize for n in names]
    assert Objective("goodput").direction == "maximize"
    assert Objective("energy_mj").direction == "minimize"
    with pytest.raises(UsageError, match="unknown objective 'exit_fraction'"):
        parse_objectives("accuracy,exit_fraction")


def test_lookup_and_labels() -> None:
    assert find_metric("P99_LATENCY_MS") is metric("p99_latency")
    assert find_metric("nope") is None
    with pytest.raises(UsageError, match="did you mean 'latency'"):
        metric("latncy")
    assert metric("accuracy").format(0.93251) == "93.25%"
    assert metric("latency").format(0.123456) == "0.123"
    assert metric("latency").format(float("inf")) == "inf"
    assert len({m.label for m in METRIC_TABLE}) == len(METRIC_TABLE)


def _brute_force_front(pts: np.ndarray) -> list[bool]:
    out = []
    for i, p in enumerate(pts):
        dominated = any(np.all(q <= p) and np.any(q < p) for j, q in enumerate(pts) if j != i)
        out.append(not dominated)
    return out


def test_pareto_mask_directions() -> None:
    pts = np.array([[1.0, 1.0], [2.0, 2.0], [2.0, 1.5], [3.0, 2.0]])
    assert pareto_mask(pts, maximize=[False, True]).tolist() == [True, True, False, False]
    assert pareto_mask(pts).tolist() == [True, False, False, False]
    assert pareto_mask(pts, maximize=[True, True]).tolist() == [False, False, False, True]
    assert pareto_mask(np.empty((0, 2))).tolist() == []


@pytest.mark.parametrize("seed", range(5))
def test_pareto_mask_matches_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 6, size=(60, 3)).astype(float)  # many ties and duplicates
    for flags in itertools.product([False, True], repeat=3):
        signed = np.where(flags, -pts, pts)
        assert pareto_mask(pts, maximize=list(flags)).tolist() == _brute_force_front(signed)
