"""Deployment terms: what the one-graph export adds to the sum of segments (no timing)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hapi_dse.cost import Design
from hapi_dse.cost.deployment import DeploymentTerms, path_extra_ms, path_extra_ms_one
from hapi_dse.cost.design import Exit
from hapi_dse.cost.model import CostModel
from hapi_dse.errors import ArtefactError
from hapi_dse.testing import synthetic_costs, synthetic_stats

TERMS = DeploymentTerms(
    decision_ms={"max_softmax": 0.02, "entropy": 0.025, "patience": 0.015},
    stage_entry_ms=0.01,
    block_offset_ms=-0.005,
    nested_factor=0.05,
    cold_ms_per_mb=0.3,
    evicted_ms_per_mb=0.1,
    graph_entry_ms=0.011,
    source="measured",
)


@pytest.fixture(scope="module")
def stats():
    return synthetic_stats(n=600, num_blocks=8, seed=3)


def model_with(stats, terms: DeploymentTerms) -> CostModel:
    costs = dataclasses.replace(synthetic_costs(stats), terms=terms, power_mj_per_ms=2.0)
    return CostModel(stats, costs)


def designs() -> list[Design]:
    return [
        Design(()),
        Design((Exit(1, "linear", 0.8),)),
        Design((Exit(0, "conv", 0.7), Exit(3, "linear", 0.9), Exit(6, "conv", 0.6))),
        Design((Exit(2, "conv", 0.3), Exit(5, "conv", 0.2)), policy="entropy"),
        Design((Exit(1, "linear", 0.0), Exit(4, "conv", 0.0), Exit(7, "conv", 0.0)), "patience", 2),
        Design((Exit(7, "linear", 0.75),)),  # an exit after the last block
    ]


def test_each_term_moves_predictions_the_expected_way(stats):
    plain = model_with(stats, DeploymentTerms())
    base = [plain.evaluate(d) for d in designs()]

    def with_(**kw):
        m = model_with(stats, dataclasses.replace(DeploymentTerms(), **kw))
        return [m.evaluate(d) for d in designs()]

    # a decision costs once per exit evaluated: the plain backbone pays nothing, every
    # design with an exit pays at least one decision and at most one per exit
    dec = with_(decision_ms={"max_softmax": 0.1, "entropy": 0.1, "patience": 0.1})
    for d, b, x in zip(designs(), base, dec, strict=True):
        added = x["latency_ms"] - b["latency_ms"]
        if not d.exits:
            assert added == pytest.approx(0.0)
        elif d.policy == "patience":  # its first exit cannot fire: no decision there
            assert 0.1 - 1e-9 <= added <= 0.1 * (len(d.exits) - 1) + 1e-9
        else:
            assert 0.1 - 1e-9 <= added <= 0.1 * len(d.exits) + 1e-9
        assert x["max_latency_ms"] >= b["max_latency_ms"]
        assert x["energy_mj"] == pytest.approx(b["energy_mj"] + 2.0 * added)
        assert x["accuracy"] == b["accuracy"]
    # a negative block offset makes every design cheaper, by exactly blocks run x offset
    off = with_(block_offset_ms=-0.01)
    assert all(x["latency_ms"] < b["latency_ms"] for x, b in zip(off, base, strict=True))
    assert off[0]["latency_ms"] == pytest.approx(base[0]["latency_ms"] - 0.08)
    # cold weights cost only where some samples leave early; more early exits, more cost
    cold = with_(cold_ms_per_mb=1.0)
    assert cold[0]["latency_ms"] == pytest.approx(base[0]["latency_ms"])
    assert all(x["latency_ms"] > b["latency_ms"] for x, b in zip(cold[1:5], base[1:5], strict=True))
    # an exit after the last block leaves no block to go cold
    assert cold[5]["latency_ms"] == pytest.approx(base[5]["latency_ms"])
    # evicted weights: an early-leaving sample pays for the deeper ones' weights
    ev = with_(evicted_ms_per_mb=1.0)
    assert ev[0]["latency_ms"] == pytest.approx(base[0]["latency_ms"])
    assert ev[2]["latency_ms"] > base[2]["latency_ms"]
    # entering a graph with exits (its optional inputs) costs every path of such a design
    # exactly once, and the plain backbone nothing
    entry = with_(graph_entry_ms=0.011)
    for d, b, x in zip(designs(), base, entry, strict=True):
        added = 0.011 if d.exits else 0.0
        for k in ("latency_ms", "p90_latency_ms", "max_latency_ms"):
            assert x[k] == pytest.approx(b[k] + added, abs=1e-12), (d, k)
    # stage entries and nested blocks cost nothing without exits
    for kw in ({"stage_entry_ms": 0.05}, {"nested_factor": 0.2}):
        got = with_(**kw)
        assert got[0]["latency_ms"] == pytest.approx(base[0]["latency_ms"])
        assert got[2]["latency_ms"] > base[2]["latency_ms"]


def test_per_design_and_batched_paths_agree(stats):
    model = model_with(stats, TERMS)
    ds = designs()
    one = [model.evaluate(d) for d in ds]
    many = model.evaluate_many(ds)
    for a, b in zip(one, many, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-12), k


@pytest.mark.parametrize("seed", range(5))
def test_scalar_and_vector_extra_are_one_formula(seed):
    rng = np.random.default_rng(seed)
    num_blocks = 12
    ms0 = np.concatenate([[0.0], np.cumsum(rng.uniform(0, 1, num_blocks))])
    mb0 = np.concatenate([[0.0], np.cumsum(rng.uniform(0, 0.5, num_blocks))])
    ends = sorted(rng.choice(num_blocks - 1, int(rng.integers(0, 5)), replace=False).tolist())
    ends.append(num_blocks - 1)
    stages = len(ends)
    starts = [0, *[e + 1 for e in ends[:-1]]]
    ms = np.array([ms0[e + 1] - ms0[s] for s, e in zip(starts, ends, strict=True)])
    mb = np.array([mb0[e + 1] - mb0[s] for s, e in zip(starts, ends, strict=True)])
    blocks = np.array([e + 1 - s for s, e in zip(starts, ends, strict=True)])
    left = rng.integers(0, 50, stages)
    first = int(rng.integers(0, 3))
    terms = dataclasses.replace(TERMS, cold_ms_per_mb=float(rng.uniform(0, 1)))
    vec = path_extra_ms(terms, [0.02], [first], ms[None], mb[None], blocks[None], left[None], 200)
    one = path_extra_ms_one(
        terms, 0.02, first, ends, left.tolist(), 200, ms0.tolist(), mb0.tolist()
    )
    np.testing.assert_allclose(vec[0], one, rtol=1e-12, atol=1e-15)


def test_simulated_latencies_match_the_metrics(stats):
    model = model_with(stats, TERMS)
    for d in designs():
        _, lat = model.simulate(d)
        assert np.mean(lat) == pytest.approx(model.evaluate(d)["latency_ms"], rel=1e-9)


def test_terms_round_trip_and_bad_sidecars_are_refused():
    again = DeploymentTerms.from_dict(TERMS.to_dict())
    assert again == dataclasses.replace(TERMS, decision_ms=dict(TERMS.decision_ms))
    assert DeploymentTerms.from_dict(None).is_zero
    for bad in (
        [1, 2],
        {"decision_ms": {"max_softmax": -1.0}},
        {"stage_entry_ms": "fast"},
        {"cold_ms_per_mb": float("nan")},
        {"graph_entry_ms": -0.01},
        {"decision_ms": [0.1]},
    ):
        with pytest.raises(ArtefactError):
            DeploymentTerms.from_dict(bad, "x.json")


def _probe_timings(truth: np.ndarray, drift: float = 1.0):
    """Probe timings made from known terms: (entries, measured, rows, overhead, block_ms)."""
    from hapi_dse.graphs.probes import probe_designs
    from hapi_dse.profiling.graph_terms import path_features, segments_ms

    rng = np.random.default_rng(0)
    num_blocks = 12
    block_ms = rng.uniform(0.02, 0.04, num_blocks)
    params = rng.integers(2000, 80000, num_blocks)
    ovh = 0.008
    head_ms = {"linear": 0.003, "conv": 0.012}
    rows = [
        {
            "segment": "block",
            "position": i,
            "head": "",
            "latency_ms": block_ms[i] + ovh,
            "params": int(params[i]),
        }
        for i in range(num_blocks)
    ]
    rows += [
        {
            "segment": "head",
            "position": i,
            "head": h,
            "latency_ms": ovh + v,
            "params": 100,
        }
        for i in range(num_blocks)
        for h, v in head_ms.items()
    ]
    rows.append(
        {
            "segment": "final",
            "position": num_blocks - 1,
            "head": "final",
            "latency_ms": ovh + 0.003,
            "params": 100,
        }
    )
    entries = []
    measured = {}
    mb = params * 4 / 1e6
    heads = {(i, h): v for i in range(num_blocks) for h, v in head_ms.items()}
    heads[(num_blocks - 1, "final")] = 0.003
    for name, design in probe_designs(num_blocks, ["linear", "conv"]):
        entries.append({"name": name, "file": f"{name}.onnx", **design.to_dict(), "feeds": []})
        for path in range(len(design.exits) + 1):
            for prev in range(len(design.exits) + 1):
                f = path_features(design, path, prev, block_ms, mb)
                base = segments_ms(design, path, block_ms, heads, ovh)
                measured[(name, path, prev)] = (base + float(f @ truth)) * drift
    return entries, measured, rows, ovh, block_ms


TRUTH = np.array([0.015, 0.02, 0.012, 0.004, -0.003, 0.05, 0.02, 0.01, 0.011])


def test_fit_recovers_terms_that_generated_the_timings(tmp_path):
    """fit_terms on latencies made from known terms and the probes' features."""
    from hapi_dse.profiling.graph_terms import fit_terms
    from hapi_dse.profiling.manifest import Manifest

    entries, measured, rows, ovh, _ = _probe_timings(TRUTH)
    man = Manifest(root=tmp_path, model_id="m", batch=1, segments=[])
    got = fit_terms(man, entries, measured, rows, ovh)
    assert got["decision_ms"]["max_softmax"] == pytest.approx(0.015, rel=1e-3)
    assert got["decision_ms"]["entropy"] == pytest.approx(0.02, rel=1e-3)
    assert got["block_offset_ms"] == pytest.approx(-0.003, rel=1e-3)
    assert got["cold_ms_per_mb"] == pytest.approx(0.02, rel=1e-3)
    assert got["evicted_ms_per_mb"] == pytest.approx(0.01, rel=1e-3)
    assert got["graph_entry_ms"] == pytest.approx(0.011, rel=1e-3)
    assert got["fit"]["with_terms_max_abs_rel_err"] < 1e-6
    assert got["fit"]["segments_only_median_abs_rel_err"] > 0.01
    assert got["fit"]["block_offset_from"] == "probe_backbone"


def test_block_offset_comes_from_the_probe_without_exits_not_the_monolithic_timing(tmp_path):
    """The per-block offset is read from ``probe_backbone`` (timed in streams, like a
    deployed model); a monolithic backbone timed 30 % slow in the segments' bursts (cold
    cache) moves nothing. Without that probe the monolithic timing is the fallback, and
    without either the offset is fitted."""
    from hapi_dse.profiling.graph_terms import fit_terms
    from hapi_dse.profiling.manifest import Manifest

    entries, measured, rows, ovh, block_ms = _probe_timings(TRUTH)
    man = Manifest(root=tmp_path, model_id="m", batch=1, segments=[])
    true_mono = ovh + float(block_ms.sum()) + len(block_ms) * TRUTH[4]
    got = fit_terms(man, entries, measured, rows, ovh, monolithic_ms=1.3 * true_mono)
    assert got["fit"]["block_offset_from"] == "probe_backbone"
    assert got["block_offset_ms"] == pytest.approx(-0.003, rel=1e-9)
    assert got["decision_ms"]["max_softmax"] == pytest.approx(0.015, rel=1e-3)
    assert got["cold_ms_per_mb"] == pytest.approx(0.02, rel=1e-3)
    assert got["fit"]["with_terms_max_abs_rel_err"] < 1e-6

    no_plain = [e for e in entries if e["exits"]]
    kept = {k: v for k, v in measured.items() if k[0] != "probe_backbone"}
    fallback = fit_terms(man, no_plain, kept, rows, ovh, monolithic_ms=true_mono)
    assert fallback["fit"]["block_offset_from"] == "monolithic backbone"
    assert fallback["block_offset_ms"] == pytest.approx(-0.003, rel=1e-9)
    assert fit_terms(man, no_plain, kept, rows, ovh)["fit"]["block_offset_from"] == "probes"
