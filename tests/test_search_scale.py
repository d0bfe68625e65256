"""Search at scale: NSGA-II's bookkeeping costs the same per trial however big the study,
gives Optuna's own trials for a seed, and the progress bar's live front is right."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import optuna
import pytest

from hapi_dse.cost import Objective
from hapi_dse.progress import Progress
from hapi_dse.search.live import LiveFront
from hapi_dse.search.sampling import make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def toy(trial: Any) -> tuple[float, float]:
    """A discrete two-objective problem with a constraint, shaped like hapi's encoding."""
    xs = [trial.suggest_int(f"exit{i}", -1, 20) for i in range(3)]
    qs = [trial.suggest_int(f"q{i}", 0, 10) for i in range(3)]
    a = sum((x + 1) * (q + 1) for x, q in zip(xs, qs, strict=True))
    b = sum(abs(x - 7) + q for x, q in zip(xs, qs, strict=True))
    trial.set_constraint("c", float(b - 40))
    return float(a), float(b)


def params_of(sampler: Any, n: int) -> list[dict[str, int]]:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(toy, n_trials=n)
    return [t.params for t in study.trials]


def test_cached_nsga2_proposes_exactly_optunas_trials() -> None:
    """The generation index answers as Optuna's scans do: same seed, same 400 trials
    (8 generations, parents chosen from constrained populations)."""
    plain = params_of(optuna.samplers.NSGAIISampler(population_size=50, seed=3), 400)
    cached = params_of(make_sampler("nsga2", 3, 50), 400)
    assert cached == plain
    other = params_of(make_sampler("nsga2", 4, 50), 400)
    assert other != plain  # the comparison can fail


def test_nsga2_bookkeeping_reads_each_trial_about_once() -> None:
    """Optuna's GA scans every trial at every trial (quadratic); the index looks at each
    finished trial once, plus the one in flight, so the work per trial does not grow."""
    sampler = make_sampler("nsga2", 0, 20)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(toy, n_trials=600)
    index = sampler._index
    looked = index.examined
    assert looked <= 2 * 600
    index.sync(study)  # the last trial finished after the index last looked
    assert sum(len(m) for m in index.members.values()) == 600
    assert index.examined == looked + 1


def test_a_study_shared_by_two_samplers_keeps_whole_generations() -> None:
    """Two samplers (as two workers) on one storage see each other's trials: generations
    fill up to the population from both, none is counted twice."""
    storage = optuna.storages.InMemoryStorage()
    a = optuna.create_study(
        storage=storage,
        study_name="s",
        directions=["maximize", "minimize"],
        sampler=make_sampler("nsga2", 0, 10),
    )
    b = optuna.load_study(study_name="s", storage=storage, sampler=make_sampler("nsga2", 1, 10))
    for _ in range(6):
        a.optimize(toy, n_trials=7)
        b.optimize(toy, n_trials=6)
    key = "CachedNSGAII:generation"
    gens = [t.system_attrs[key] for t in a.trials]
    counts = np.bincount(gens)
    assert counts[:-1].tolist() == [10] * (len(counts) - 1)  # every finished generation whole
    assert counts[-1] <= 10


def objectives(*names: str) -> list[Objective]:
    return [Objective(n) for n in names]


def test_live_hypervolume_is_relative_to_the_backbone() -> None:
    live = LiveFront(objectives("accuracy", "latency_ms"), {"accuracy": 0.9, "latency_ms": 2.0})
    assert live.hypervolume() == 0.0
    live.add([0.9, 2.0])  # the backbone itself: no volume
    assert live.hypervolume() == 0.0
    live.add([0.9, 1.0])  # backbone accuracy at half the latency
    assert live.hypervolume() == pytest.approx(0.5)
    live.add([0.45, 0.5])  # half the accuracy at a quarter of the latency
    # union of [0,1]x[0,0.5] and [0,0.5]x[0,0.75] in (accuracy/0.9, 1 - latency/2)
    assert live.hypervolume() == pytest.approx(0.5 + 0.5 * 0.25)
    live.add([0.5, 1.5])  # dominated: nothing changes
    live.add([0.95, 0.9], feasible=False)  # breaks an SLO: not on the front
    assert live.hypervolume() == pytest.approx(0.625)
    assert live.trials == 5


def test_live_hypervolume_matches_optuna_in_three_objectives() -> None:
    from hapi_dse.search.optuna_compat import compute_hypervolume

    rng = np.random.default_rng(0)
    ref = {"accuracy": 0.9, "latency_ms": 2.0, "energy_mj": 4.0}
    live = LiveFront(objectives("accuracy", "latency_ms", "energy_mj"), ref)
    pts = np.column_stack(
        [rng.uniform(0.5, 0.95, 300), rng.uniform(0.2, 2.5, 300), rng.uniform(0.5, 5, 300)]
    )
    for p in pts:
        live.add(p.tolist())
    loss = np.column_stack([-pts[:, 0] / 0.9, pts[:, 1] / 2.0, pts[:, 2] / 4.0])
    inside = np.all(loss < np.array([0.0, 1.0, 1.0]), axis=1)
    want = compute_hypervolume(loss[inside], np.array([0.0, 1.0, 1.0]))
    assert live.hypervolume() == pytest.approx(want)
    assert len(live._front) < inside.sum()  # dominated points were dropped


def test_progress_status_is_computed_only_when_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)

    def status() -> str:
        calls.append(1)
        return "123 trials/s  hv 0.4200"

    with Progress(1000, "search", enabled_=True, status=status) as bar:
        for _ in range(1000):
            bar.update()
    assert 1 <= len(calls) <= 20  # drawn at most ~10 times a second, and at the end
    assert "trials/s  hv 0.4200" in err.getvalue()
    with Progress(10, "search", enabled_=False, status=status) as bar:
        bar.update(10)
    assert len(calls) <= 20
