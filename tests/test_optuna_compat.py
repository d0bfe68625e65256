"""Each use of Optuna's private API (hapi_dse.search.optuna_compat) against a real in-memory
study: an Optuna release that moves one fails here, under the adapter function's name."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import optuna
import pytest

from hapi_dse.search import optuna_compat as compat
from hapi_dse.search.sampling import make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def toy(trial: Any) -> tuple[float, float]:
    x = trial.suggest_int("x", 0, 20)
    y = trial.suggest_int("y", 0, 20)
    return float(x + y), float((x - 7) ** 2 + y)


def study_with(sampler: Any, trials: int) -> tuple[optuna.Study, Any]:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage, directions=["maximize", "minimize"], sampler=sampler
    )
    study.optimize(toy, n_trials=trials)
    return study, storage


def test_trial_id_is_the_id_storage_calls_take() -> None:
    study, storage = study_with(optuna.samplers.RandomSampler(seed=0), 5)
    live = study.ask()  # a Trial, as an objective sees it
    trials = study.get_trials(deepcopy=False)
    ids = [compat.trial_id(t) for t in trials]
    assert [storage.get_trial(i).number for i in ids] == [t.number for t in trials]
    assert compat.trial_id(live) == ids[-1] and len(set(ids)) == len(ids)


def test_set_trial_system_attr_is_read_back_by_the_trial() -> None:
    study, _ = study_with(optuna.samplers.RandomSampler(seed=0), 2)
    study.ask(), study.ask()  # running, as a sampler sees a trial it is asked about
    frozen = study.get_trials(deepcopy=False)[2]  # a FrozenTrial, as samplers get it
    compat.set_trial_system_attr(study, frozen, "hapi:test", 7)
    assert study.trials[2].system_attrs["hapi:test"] == 7
    assert "hapi:test" not in study.trials[3].system_attrs


def test_study_system_attrs_read_and_write_the_study() -> None:
    study, storage = study_with(optuna.samplers.RandomSampler(seed=0), 1)
    assert "hapi:test" not in compat.study_system_attrs(study)
    compat.set_study_system_attr(study, "hapi:test", [3, 1])
    assert compat.study_system_attrs(study)["hapi:test"] == [3, 1]
    # the same study read back from its storage by name
    again = optuna.load_study(study_name=study.study_name, storage=storage)
    assert compat.study_system_attrs(again)["hapi:test"] == [3, 1]


def test_generation_key_is_where_optunas_nsga2_records_generations() -> None:
    sampler = optuna.samplers.NSGAIISampler(population_size=10, seed=0)
    study, _ = study_with(sampler, 35)
    key = compat.generation_key(sampler)
    gens = [t.system_attrs[key] for t in study.trials]
    assert gens[:10] == [0] * 10 and max(gens) >= 2
    assert compat.generation_key(make_sampler("nsga2", 0, 10)) != key  # a key per class


def test_parent_cache_key_prefix_is_where_optunas_nsga2_records_parents() -> None:
    sampler = optuna.samplers.NSGAIISampler(population_size=10, seed=0)
    study, _ = study_with(sampler, 35)
    attrs = compat.study_system_attrs(study)
    parents = attrs[compat.parent_cache_key_prefix(sampler) + "1"]
    ids = {compat.trial_id(t) for t in study.trials}
    assert len(parents) == 10 and set(parents) <= ids  # trial ids, not numbers


def test_hapis_nsga2_keeps_optunas_records() -> None:
    """The cached NSGA-II writes what Optuna's would, where Optuna's would read it."""
    sampler = make_sampler("nsga2", 0, 10)
    study, _ = study_with(sampler, 35)
    key = compat.generation_key(sampler)
    assert [t.system_attrs[key] for t in study.trials][:10] == [0] * 10
    parents = compat.study_system_attrs(study)[compat.parent_cache_key_prefix(sampler) + "1"]
    first = {compat.trial_id(t) for t in study.trials if t.system_attrs[key] == 0}
    assert len(parents) == 10 and set(parents) <= first


def test_compute_hypervolume_is_the_exact_dominated_volume() -> None:
    square = np.array([[1.0, 2.0], [2.0, 1.0]])
    assert compat.compute_hypervolume(square, np.array([3.0, 3.0])) == pytest.approx(3.0)
    cube = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.5, 0.5, 0.5]])
    # union of the boxes up to (2, 2, 2): 2x2x1, 1x1x2 and 1.5^3, less the pairwise
    # overlaps 1x1x1, 1.5x1.5x1 and 1x1x1.5, plus the triple 1x1x1
    want = 4.0 + 2.0 + 3.375 - 1.0 - 2.25 - 1.5 + 1.0
    assert compat.compute_hypervolume(cube, np.full(3, 2.0)) == pytest.approx(want)
    front = cube[:2]
    got = compat.compute_hypervolume(front, np.full(3, 2.0), assume_pareto=True)
    assert got == pytest.approx(4.0 + 2.0 - 1.0)


def test_optimize_logger_is_where_optuna_reports_a_failed_trial() -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(compat.OPTIMIZE_LOGGER)
    logger.addHandler(handler)
    try:
        study = optuna.create_study()
        study.optimize(lambda t: None, n_trials=1)  # type: ignore[arg-type,return-value]
    finally:
        logger.removeHandler(handler)
    assert any("Trial 0 failed" in r.getMessage() for r in records)
    assert all(r.name == compat.OPTIMIZE_LOGGER for r in records)
