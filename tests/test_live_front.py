"""The live progress line's front and hypervolume are hapi's one Pareto front and one
hypervolume: the same as the batch functions on every point seen, whatever the order of
arrival, duplicates and ties included, and the hypervolume is the exact dominated volume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hapi_dse.cost import Objective
from hapi_dse.cost.metrics import pareto_front
from hapi_dse.search.live import LiveFront, hypervolume

NAMES = ("accuracy", "latency_ms", "energy_mj")
STEP = 0.125  # values on a binary lattice: ties everywhere, and exact float arithmetic


def lattice_points(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Metric values on the lattice, some beyond the backbone (1.0), a fifth repeated."""
    pts = rng.integers(1, 11, (n, d)) * STEP
    return np.vstack([pts, pts[rng.integers(0, n, n // 5)]])


def losses(values: np.ndarray, d: int) -> np.ndarray:
    """Normalised losses against a backbone of 1.0 in every metric (accuracy maximised)."""
    sign = np.array([-1.0 if n == "accuracy" else 1.0 for n in NAMES[:d]])
    return values * sign


def brute_front(pts: np.ndarray) -> set[tuple[float, ...]]:
    """The distinct points no other point dominates, by the definition."""
    rows = [tuple(p) for p in pts.tolist()]
    return {
        p
        for p in rows
        if not any(all(a <= b for a, b in zip(q, p, strict=True)) and q != p for q in rows)
    }


def lattice_volume(pts: np.ndarray, ref: np.ndarray) -> float:
    """The dominated volume by counting lattice cells: a cell is dominated when a point is
    at or below its lower corner in every coordinate."""
    axes = [np.arange(lo, r, STEP) for lo, r in zip(pts.min(axis=0), ref, strict=True)]
    cells = sum(
        bool(np.any(np.all(pts <= np.array(corner), axis=1))) for corner in itertools.product(*axes)
    )
    return cells * STEP ** len(ref)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_the_live_front_is_the_batch_front_of_every_point(d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = lattice_points(rng, 120, d)
    feasible = rng.random(len(values)) > 0.15
    live = LiveFront([Objective(n) for n in NAMES[:d]], dict.fromkeys(NAMES[:d], 1.0))
    for v, ok in zip(values, feasible, strict=True):
        live.add(v.tolist(), bool(ok))
        if rng.random() < 0.1:  # read mid-way: the front is merged in steps
            live.hypervolume()
    assert live.trials == len(values)

    ref = np.array([0.0 if n == "accuracy" else 1.0 for n in NAMES[:d]])
    loss = losses(values, d)
    seen = loss[feasible & np.all(loss < ref, axis=1)]
    batch = seen[pareto_front(seen)]
    got = live.front()
    assert np.array_equal(got, batch)  # the same rows, in the order they were found
    assert {tuple(p) for p in got.tolist()} == brute_front(seen)
    assert len(got) == len(brute_front(seen))  # each distinct point once

    hv = live.hypervolume()
    assert hv == hypervolume(loss[feasible], ref)  # dominated and outside points add nothing
    assert hv == pytest.approx(lattice_volume(seen, ref), rel=1e-12) and hv > 0


def test_the_hypervolume_ignores_order_duplicates_and_points_outside() -> None:
    rng = np.random.default_rng(7)
    pts = -lattice_points(rng, 60, 3)  # all below the reference 0
    ref = np.zeros(3)
    hv = hypervolume(pts, ref)
    assert hv == pytest.approx(hypervolume(pts[rng.permutation(len(pts))], ref), rel=1e-12)
    outside = np.array([[0.0, -1.0, -1.0], [np.nan, -2.0, -2.0], [-9.0, 1.0, -1.0]])
    assert hypervolume(np.vstack([pts, pts[:10], outside]), ref) == pytest.approx(hv, rel=1e-12)
    assert hypervolume(np.empty((0, 3)), ref) == 0.0 == hypervolume(outside, ref)
