"""Samplers by name, and NSGA-II that does not spend trials on designs already scored.

On a discrete space NSGA-II proposes many children equal to a design it has already seen
(after a few generations, roughly half of its trials on the ``small`` space). The cost model
is deterministic, so such a trial teaches nothing. :class:`DistinctNSGAII` asks the plain
NSGA-II child generation again (new crossover partners, new mutations) when a child decodes
to a design the search has scored, up to ``tries`` times, then accepts the duplicate (the
space may simply be exhausted). Selection, crowding and constraint handling are Optuna's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from hapi_dse.errors import unknown_name

SAMPLERS = ("nsga2", "tpe", "gp", "random")
DEFAULT_POPULATION = 50  # NSGA-II's population when neither --population nor the space sets it


def _nsga2_class() -> type:
    import numpy as np
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution

    class DistinctNSGAII(optuna.samplers.NSGAIISampler):  # type: ignore[misc]
        def __init__(
            self,
            *,
            seen: Callable[[Mapping[str, Any]], bool],
            tries: int = 20,
            seed: int | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(seed=seed, **kwargs)
            self._seen = seen
            self._tries = tries
            self._fill_rng = np.random.RandomState(seed)

        def sample_relative(
            self, study: Any, trial: Any, search_space: dict[str, Any]
        ) -> dict[str, Any]:
            params: dict[str, Any] = {}
            for _ in range(self._tries):
                params = super().sample_relative(study, trial, search_space)
                if not params:  # first generation: Optuna samples at random
                    return params
                params = self._fill(params, search_space)
                if not self._seen(params):
                    break
            return params

        def _fill(self, params: dict[str, Any], space: dict[str, Any]) -> dict[str, Any]:
            """Draw the mutated (left out) parameters now, as Optuna would, at random."""
            out = dict(params)
            rng = self._fill_rng
            for name, dist in space.items():
                if name in out:
                    continue
                if isinstance(dist, CategoricalDistribution):
                    out[name] = dist.choices[rng.randint(len(dist.choices))]
                elif isinstance(dist, IntDistribution) and not dist.log:
                    out[name] = dist.low + dist.step * rng.randint(
                        (dist.high - dist.low) // dist.step + 1
                    )
            return out

    return DistinctNSGAII


def make_sampler(
    name: str,
    seed: int | None,
    population: int | None = None,
    seen: Callable[[Mapping[str, Any]], bool] | None = None,
) -> Any:
    """An Optuna sampler by name; ``seen(params)`` enables NSGA-II's duplicate avoidance."""
    import optuna

    if name == "nsga2":
        size = population or DEFAULT_POPULATION
        if seen is None:
            return optuna.samplers.NSGAIISampler(population_size=size, seed=seed)
        return _nsga2_class()(population_size=size, seed=seed, seen=seen)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "gp":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise unknown_name("sampler", name, SAMPLERS)
