"""The vectorised cost model against a brute-force per-sample loop, on random statistics."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable

import numpy as np
import pytest

from hapi_dse.cost import (
    METRICS,
    POLICY_REGISTRY,
    CostModel,
    Design,
    Exit,
    SegmentCosts,
    predict,
    simulate,
)
from hapi_dse.errors import ArtefactError, UsageError
from hapi_dse.run import ExitStats
from hapi_dse.testing import synthetic_costs, synthetic_stats

HEADS = ("linear", "conv")


def random_stats(rng: np.random.Generator, n: int, blocks: int) -> ExitStats:
    """Unstructured statistics; confidences on a coarse grid so thresholds hit ties."""
    cols = [(p, h) for p in range(blocks) for h in HEADS] + [(blocks - 1, "final")]
    k = len(cols)
    return ExitStats(
        labels=rng.integers(0, 3, n).astype(np.int16),
        confidence=(rng.integers(0, 21, (n, k)) / 20).astype(np.float32),
        entropy=(rng.integers(0, 21, (n, k)) / 20).astype(np.float32),
        prediction=rng.integers(0, 3, (n, k)).astype(np.int16),
        position=np.array([p for p, _ in cols], np.int32),
        head=np.array([h for _, h in cols], dtype="U16"),
    )


def random_costs(rng: np.random.Generator, stats: ExitStats) -> SegmentCosts:
    blocks = int(stats.position.max()) + 1
    return SegmentCosts.from_arrays(
        position=stats.position,
        head=stats.head,
        block_latency_ms=rng.uniform(0.5, 3, blocks),
        head_latency_ms=rng.uniform(0, 1, stats.k),
        block_energy_mj=rng.uniform(0.5, 3, blocks),
        head_energy_mj=rng.uniform(0, 1, stats.k),
        block_params=rng.integers(100, 10_000, blocks),
        head_params=rng.integers(10, 1_000, stats.k),
        call_overhead_ms=float(rng.uniform(0, 0.1)),
        call_overhead_mj=float(rng.uniform(0, 0.1)),
    )


def random_design(rng: np.random.Generator, blocks: int, policy: str) -> Design:
    m = int(rng.integers(0, min(blocks, 5) + 1))
    positions = sorted(rng.choice(blocks, m, replace=False).tolist())
    exits = tuple(
        Exit(int(p), str(rng.choice(HEADS)), float(rng.integers(0, 21) / 20)) for p in positions
    )
    return Design(exits, policy, patience=int(rng.integers(1, 4)))


def random_case(
    seed: int, n: int, blocks: int
) -> tuple[np.random.Generator, ExitStats, SegmentCosts]:
    """A generator seeded with ``seed``, random statistics of ``n`` samples after each of
    ``blocks`` blocks and random costs for them, drawn in that order."""
    rng = np.random.default_rng(seed)
    stats = random_stats(rng, n, blocks)
    return rng, stats, random_costs(rng, stats)


def random_designs(
    rng: np.random.Generator, blocks: int, each: int, policies: Iterable[str] = POLICY_REGISTRY
) -> list[Design]:
    """``each`` random designs of every one of ``policies``, policy by policy."""
    return [random_design(rng, blocks, p) for p in policies for _ in range(each)]


def brute_force(design: Design, stats: ExitStats, costs: SegmentCosts) -> dict[str, float]:
    """One sample at a time, straight from DESIGN 2.3."""
    cols = [stats.column(e.position, e.head) for e in design.exits]
    final = stats.k - 1
    lats, ens, right, early = [], [], 0, 0
    for s in range(stats.n):
        lat, en, taken = costs.call_overhead_ms, costs.call_overhead_mj, final
        for i, (e, c) in enumerate(zip(design.exits, cols, strict=True)):
            lat += costs.head_latency_ms[c]
            en += costs.head_energy_mj[c]
            if design.policy == "max_softmax":
                fire = float(stats.confidence[s, c]) >= e.threshold
            elif design.policy == "entropy":
                fire = float(stats.entropy[s, c]) <= e.threshold
            else:
                window = cols[i + 1 - design.patience : i + 1] if i + 1 >= design.patience else []
                fire = bool(window) and len({int(stats.prediction[s, w]) for w in window}) == 1
            if fire:
                taken = c
                break
        else:
            lat += costs.head_latency_ms[final]
            en += costs.head_energy_mj[final]
        position = int(stats.position[taken])
        lat += costs.block_latency_ms[: position + 1].sum()
        en += costs.block_energy_mj[: position + 1].sum()
        lats.append(lat)
        ens.append(en)
        right += int(stats.prediction[s, taken] == stats.labels[s])
        early += taken != final
    lats_a = np.array(lats)
    params = costs.block_params.sum() + costs.head_params[final] + costs.head_params[cols].sum()
    acc = right / stats.n
    return {
        "accuracy": acc,
        "latency_ms": lats_a.mean(),
        "p90_latency_ms": np.percentile(lats_a, 90, method="inverted_cdf"),
        "p99_latency_ms": np.percentile(lats_a, 99, method="inverted_cdf"),
        "max_latency_ms": lats_a.max(),
        "energy_mj": float(np.mean(ens)),
        "size_mb": params * 4 / 1e6,
        "goodput": acc * 1000 / lats_a.mean(),
        "exit_fraction": early / stats.n,
    }


@pytest.mark.parametrize("policy", sorted(POLICY_REGISTRY))
def test_cost_model_matches_brute_force(policy: str) -> None:
    rng = np.random.default_rng(list(POLICY_REGISTRY).index(policy))
    for trial in range(12):
        n = int(rng.integers(1, 300))
        blocks = int(rng.integers(1, 7))
        stats = random_stats(rng, n, blocks)
        costs = random_costs(rng, stats)
        model = CostModel(stats, costs)
        for _ in range(8):
            design = random_design(rng, blocks, policy)
            got = model.evaluate(design)
            want = brute_force(design, stats, costs)
            assert set(got) == set(METRICS)
            for metric in METRICS:
                assert got[metric] == pytest.approx(want[metric], rel=1e-9, abs=1e-12), (
                    trial,
                    design,
                    metric,
                )


def test_simulate_agrees_with_evaluate() -> None:
    rng, stats, costs = random_case(7, 257, 5)
    model = CostModel(stats, costs)
    for design in random_designs(rng, 5, each=5):
        exit_index, latency = model.simulate(design)
        assert exit_index.shape == latency.shape == (stats.n,)
        assert exit_index.min() >= 0 and exit_index.max() <= len(design.exits)
        metrics = model.evaluate(design)
        assert latency.mean() == pytest.approx(metrics["latency_ms"])
        assert latency.max() == pytest.approx(metrics["max_latency_ms"])
        assert np.mean(exit_index < len(design.exits)) == pytest.approx(metrics["exit_fraction"])


def test_predict_takes_a_design_json_dict() -> None:
    stats = synthetic_stats(n=400, num_blocks=4)
    costs = synthetic_costs(stats)
    design = Design((Exit(1, "conv", 0.8), Exit(2, "linear", 0.9)))
    as_dict = {"schema_version": 1, **design.to_dict(), "extra": "ignored"}
    assert predict(as_dict, stats, costs) == CostModel(stats, costs).evaluate(design)
    exit_index, _ = simulate(as_dict, stats, costs)
    assert set(np.unique(exit_index).tolist()) <= {0, 1, 2}


def test_threshold_zero_is_the_truncated_subnet() -> None:
    stats = synthetic_stats(n=300, num_blocks=4)
    costs = synthetic_costs(stats)
    got = predict(Design((Exit(1, "conv", 0.0),)), stats, costs)
    c = stats.column(1, "conv")
    assert got["accuracy"] == pytest.approx(stats.correct[:, c].mean())
    assert got["exit_fraction"] == 1.0
    assert got["p99_latency_ms"] == got["max_latency_ms"] == pytest.approx(got["latency_ms"])


def test_more_exits_cost_size_and_the_backbone_is_the_slowest() -> None:
    stats = synthetic_stats(n=300, num_blocks=4)
    costs = synthetic_costs(stats)
    model = CostModel(stats, costs)
    plain = model.evaluate(Design(()))
    assert plain["exit_fraction"] == 0.0
    one = model.evaluate(Design((Exit(3, "conv", 1.1),)))  # never fires: pure overhead
    assert one["size_mb"] > plain["size_mb"]
    assert one["latency_ms"] > plain["latency_ms"]
    assert one["accuracy"] == plain["accuracy"]


def test_bad_designs_and_mismatched_costs() -> None:
    stats = synthetic_stats(n=50, num_blocks=3)
    costs = synthetic_costs(stats)
    model = CostModel(stats, costs)
    with pytest.raises(UsageError, match="no 'conv' head at position 7"):
        model.evaluate(Design((Exit(7, "conv", 0.5),)))
    with pytest.raises(UsageError, match="strictly increase"):
        Design((Exit(2, "conv", 0.5), Exit(1, "conv", 0.5)))
    with pytest.raises(UsageError, match="unknown exit policy 'maxsoftmax'.*'max_softmax'"):
        Design((), "maxsoftmax")
    with pytest.raises(UsageError, match="malformed design"):
        Design.from_dict({"exits": [{"head": "conv"}]})
    other = synthetic_stats(n=50, num_blocks=4)
    with pytest.raises(ArtefactError, match="do not describe"):
        CostModel(stats, synthetic_costs(other))


def test_cost_and_search_do_not_import_torch() -> None:
    code = (
        "import sys; import hapi_dse.cost, hapi_dse.search, hapi_dse.cli.search_cmd; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_prepared_grid_gives_the_same_metrics() -> None:
    rng, stats, costs = random_case(3, 333, 4)
    grid = [i / 20 for i in range(21)]
    lazy, prepared = CostModel(stats, costs), CostModel(stats, costs)
    prepared.prepare("max_softmax", grid)
    prepared.prepare("entropy", grid[::-1])
    for design in random_designs(rng, 4, each=20, policies=("max_softmax", "entropy")):
        assert prepared.evaluate(design) == lazy.evaluate(design)


def test_from_table_counts_the_call_overhead_once(tmp_path) -> None:
    """Each table row includes one session.run overhead; a design is one graph, one call."""
    from hapi_dse.profiling.table import load_table, write_table

    stats = synthetic_stats(n=100, num_blocks=3, heads=("linear",))
    rows = []
    for p in range(3):
        rows.append(
            {
                "segment": "block",
                "position": p,
                "head": "",
                "latency_ms": 1.0,
                "energy_mj": 2.0,
                "params": 100,
            }
        )
        rows.append(
            {
                "segment": "head",
                "position": p,
                "head": "linear",
                "latency_ms": 0.3,
                "energy_mj": 0.6,
                "params": 10,
            }
        )
    rows.append(
        {
            "segment": "final",
            "position": 2,
            "head": "final",
            "latency_ms": 0.2,
            "energy_mj": 0.4,
            "params": 20,
        }
    )
    for r in rows:
        r.update(batch=1, latency_p90_ms=r["latency_ms"], flops=1000, runs=50, source="measured")
    write_table(rows, {"call_overhead_ms": 0.1}, device="dev", model_id="m", profiles=tmp_path)
    costs = SegmentCosts.from_table(load_table("dev", "m", tmp_path), stats)
    assert costs.call_overhead_ms == pytest.approx(0.1)
    assert costs.block_latency_ms == pytest.approx([0.9, 0.9, 0.9])
    model = CostModel(stats, costs)
    plain = model.evaluate(Design(()))
    assert plain["latency_ms"] == pytest.approx(0.1 + 3 * 0.9 + 0.1)
    assert plain["size_mb"] == pytest.approx((3 * 100 + 20) * 4 / 1e6)
    # energy: power x time per segment (2 mJ/ms here), the overhead's share added once
    assert plain["energy_mj"] == pytest.approx(2.0 * plain["latency_ms"])
    always = model.evaluate(Design((Exit(0, "linear", 0.0),)))
    assert always["latency_ms"] == pytest.approx(0.1 + 0.9 + 0.2)
    assert always["energy_mj"] == pytest.approx(2.0 * always["latency_ms"])


def test_a_full_mask_cache_starts_over_without_mixing_masks(monkeypatch) -> None:
    import hapi_dse.cost.model as model_mod

    monkeypatch.setattr(model_mod, "_MAX_CACHED_MASKS", 6)
    rng, stats, costs = random_case(11, 200, 6)
    small = CostModel(stats, costs)
    for design in random_designs(rng, 6, each=15):
        assert small.evaluate(design) == pytest.approx(brute_force(design, stats, costs))


def test_evaluate_many_equals_one_at_a_time() -> None:
    rng, stats, costs = random_case(5, 300, 6)
    designs = random_designs(rng, 6, each=30)
    batch = CostModel(stats, costs).evaluate_many(designs)
    single = CostModel(stats, costs)
    for got, design in zip(batch, designs, strict=True):
        assert got == pytest.approx(single.evaluate(design), rel=1e-12)
