"""The samplers and ``--pick knee`` on synthetic statistics: NSGA-II skips designs it has
scored, every sampler is reproducible for a seed, and the knee is the documented one."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

from hapi_dse.run import RunDir
from hapi_dse.search.config import SearchConfig
from hapi_dse.search.problem import Problem, build_problem
from hapi_dse.search.sampling import make_sampler
from hapi_dse.search.study import run_study
from hapi_dse.testing import SyntheticSetup

pytestmark = pytest.mark.synth(n_val=300, n_test=300, num_blocks=6)


def config(synth: SyntheticSetup, space: Path, **kw: Any) -> SearchConfig:
    """A search of ``synth`` on devA in ``space`` (conftest's tiny space: 120 designs, a few
    seconds of GP)."""
    return SearchConfig(
        devices=("devA",), model=str(synth.run), profiles=str(synth.profiles), space=str(space),
        **kw,
    )  # fmt: skip


def problem(synth: SyntheticSetup, cfg: SearchConfig) -> Problem:
    rd = RunDir(synth.run)
    return build_problem("devA", rd, rd.stats("val"), rd.stats("test"), cfg)


# -- NSGA-II without duplicates ---------------------------------------------------------------
def nsga2_designs(
    synth: SyntheticSetup, space: Path, seed: int, trials: int, distinct: bool
) -> list[Any]:
    """The design of every trial of an NSGA-II search (population 10) on the tiny space."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    p = problem(synth, config(synth, space))
    assert p.space.size() == 120
    sampler = p.sampler("nsga2", seed, 10) if distinct else make_sampler("nsga2", seed, 10)
    study = optuna.create_study(directions=[o.direction for o in p.objectives], sampler=sampler)
    study.optimize(p.objective, n_trials=trials)
    return [p.space.decode(t.params).key for t in study.trials]


def repeats(designs: list[Any], start: int) -> int:
    """How many trials from ``start`` on propose a design an earlier trial proposed."""
    return sum(d in set(designs[:i]) for i, d in enumerate(designs) if i >= start)


@pytest.mark.parametrize("seed", [0, 1])
def test_nsga2_does_not_propose_designs_it_has_scored(synth, tiny_space, seed: int) -> None:
    # 60 trials on 120 designs: after the random first generation (10 trials, which may
    # repeat), plain NSGA-II proposes some 25 designs again; hapi's almost none
    mine = nsga2_designs(synth, tiny_space, seed, 60, distinct=True)
    plain = nsga2_designs(synth, tiny_space, seed, 60, distinct=False)
    assert repeats(mine, 10) <= 3
    assert repeats(plain, 10) >= 10  # the case is not vacuous: plain NSGA-II repeats
    assert len(set(mine)) >= 55 > len(set(plain))


def test_nsga2_on_an_exhausted_space_accepts_repeats_and_finishes(synth, tiny_space) -> None:
    designs = nsga2_designs(synth, tiny_space, 0, 150, distinct=True)  # more trials than designs
    assert len(designs) == 150
    assert len(set(designs)) >= 100  # it still covers most of the space


# -- every sampler: reproducible for a seed ----------------------------------------------------
SAMPLER_TRIALS = {"tpe": 30, "random": 30, "nsga2": 30, "gp": 12}  # gp: 10 random, then GP


def trial_params(
    synth: SyntheticSetup, space: Path, sampler: str, seed: int
) -> list[dict[str, Any]]:
    cfg = config(synth, space, sampler=sampler, seed=seed, trials=SAMPLER_TRIALS[sampler])
    run = run_study(problem(synth, cfg), cfg, "s")
    assert [t.state.name for t in run.trials] == ["COMPLETE"] * cfg.trials
    return [t.params for t in run.trials]


@pytest.mark.parametrize("sampler", ["tpe", "gp", "random", "nsga2"])
def test_samplers_are_reproducible_for_a_seed(synth, tiny_space, sampler: str) -> None:
    if sampler == "gp" and (
        importlib.util.find_spec("torch") is None or importlib.util.find_spec("scipy") is None
    ):
        pytest.skip("Optuna's GPSampler needs torch and scipy")
    first = trial_params(synth, tiny_space, sampler, seed=1)
    assert trial_params(synth, tiny_space, sampler, seed=1) == first
    assert trial_params(synth, tiny_space, sampler, seed=2) != first
    assert len({json.dumps(p, sort_keys=True) for p in first}) > 1


# -- --pick knee -------------------------------------------------------------------------------
def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_pick_knee_is_the_front_design_nearest_the_ideal_point(
    synth, run_cli, tmp_path: Path
) -> None:
    """``knee`` (search/picking.py): among the feasible Pareto designs, the one nearest the
    ideal point, each objective scaled to 0..1 over the front. Checked by brute force over
    trials.csv, with the default objectives (accuracy up, latency and energy down)."""
    res = run_cli(
        *synth.search_args(tmp_path, "--slo", "accuracy=93%", "--pick", "knee", trials=150, seed=4)
    )
    assert res.exit_code == 0, res.stderr
    design = json.loads((tmp_path / "devA" / "design.json").read_text())
    assert design["pick"] == "knee"
    assert design["objectives"] == ["accuracy", "latency_ms", "energy_mj"]
    signs = {"accuracy": -1.0, "latency_ms": 1.0, "energy_mj": 1.0}  # smaller is better

    def vec(row: dict[str, str]) -> tuple[float, ...]:
        return tuple(signs[k] * float(row[k]) for k in signs)

    trials = read_csv(tmp_path / "devA" / "trials.csv")
    feasible = [t for t in trials if t["state"] == "COMPLETE" and t["feasible"] == "True"]
    assert 0 < len(feasible) < len(trials)  # the SLO counts
    points = {vec(t) for t in feasible}

    def dominated(p: tuple[float, ...]) -> bool:
        return any(q != p and all(a <= b for a, b in zip(q, p, strict=True)) for q in points)

    front = [p for p in points if not dominated(p)]
    assert len(front) >= 3
    low = [min(p[k] for p in front) for k in range(3)]
    span = [(max(p[k] for p in front) - low[k]) or 1.0 for k in range(3)]

    def dist(p: tuple[float, ...]) -> float:
        return math.sqrt(sum(((p[k] - low[k]) / span[k]) ** 2 for k in range(3)))

    knee = min(front, key=dist)
    chosen = next(t for t in trials if int(t["trial"]) == design["trial"])
    assert chosen["pareto"] == "True" and vec(chosen) in front
    assert dist(vec(chosen)) == pytest.approx(dist(knee), abs=1e-12)
    # the knee is a compromise here, not an end of the front (the default pick's design)
    best_accuracy = min(front, key=lambda p: (p[0], p[1], p[2]))
    assert vec(chosen) != best_accuracy
