"""One definition of the statistics over per-sample latencies (``Metric.statistic``): what
the cost model predicts, ``hapi eval`` measures and ``--verify`` compares are the same
order statistics."""

from __future__ import annotations

import numpy as np
import pytest

from hapi_dse.cost import METRIC_TABLE, CostModel, Design, Exit
from hapi_dse.cost.metrics import (
    STATISTIC_METRICS,
    STATISTICS,
    percentile_rank,
    statistic,
    statistics,
)
from hapi_dse.errors import UsageError
from hapi_dse.testing import synthetic_costs, synthetic_stats


def test_every_latency_metric_names_a_reported_statistic() -> None:
    named = [m.statistic for m in METRIC_TABLE if m.statistic is not None]
    assert named and set(named) <= set(STATISTICS)
    assert [m.statistic for m in STATISTIC_METRICS] == named
    assert all(m.kind == "time" for m in STATISTIC_METRICS)


@pytest.mark.parametrize("n", [1, 2, 3, 9, 10, 11, 99, 100, 101, 997, 1000, 5003])
def test_statistics_are_numpys_inverted_cdf_percentiles(n: int) -> None:
    rng = np.random.default_rng(n)
    # coarse values: ties at the percentile ranks
    values = rng.integers(0, max(n // 3, 2), n) * 0.125 + rng.uniform(0, 1)
    got = statistics(values)
    assert list(got) == list(STATISTICS)
    want = {
        "mean": float(np.mean(values)),
        "max": float(np.max(values)),
        **{f"p{q}": float(np.percentile(values, q, method="inverted_cdf")) for q in (50, 90, 99)},
    }
    assert got == want  # bit for bit
    for q in (50, 90, 99):  # the rank is the smallest with at least q % at or below it
        r = percentile_rank(q, n)
        assert 100 * r >= q * n and 100 * (r - 1) < q * n


def test_the_cost_models_latency_metrics_are_the_statistics_of_its_simulated_samples() -> None:
    stats = synthetic_stats(n=1013, seed=3)
    model = CostModel(stats, synthetic_costs(stats))
    designs = [
        Design(exits=()),
        Design(exits=(Exit(1, "linear", 0.6), Exit(4, "conv", 0.8))),
        Design(exits=(Exit(0, "linear", 0.3), Exit(2, "conv", 0.5), Exit(5, "linear", 0.9))),
        Design(exits=(Exit(2, "conv", 0.7),), policy="entropy"),
    ]
    for design in designs:
        metrics = model.evaluate(design)
        exit_index, lat = model.simulate(design)
        assert len(set(exit_index.tolist())) > 1 or not design.exits
        for m in STATISTIC_METRICS:
            assert statistic(lat, m.statistic) == pytest.approx(metrics[m.column], rel=1e-12)


def test_an_unknown_statistic_is_refused_with_the_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown statistic 'p95'.*p90"):
        statistic([1.0, 2.0], "p95")
