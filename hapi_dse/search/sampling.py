"""Samplers by name, and the NSGA-II hapi runs: its bookkeeping cached, its children distinct.

Optuna's GA samplers find a trial's generation and each generation's population by reading
every trial of the study, at every trial: a search's cost grows with the square of its
trials (1,000 trials in 1.7 s, 20,000 in 280 s). :class:`GenerationIndex` keeps the same
facts (how many COMPLETE trials each generation holds, and which) up to date from the trials
that finished since it last looked, so a trial costs the same whether the study holds a
hundred trials or a hundred thousand. It reads the storage, not the trials this process
told, so workers sharing a study (``--jobs``, ``--storage``) still see each other's trials;
its answers are Optuna's own, so a seed gives the same trials as plain Optuna.

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
from hapi_dse.search import optuna_compat as compat

SAMPLERS = ("nsga2", "tpe", "gp", "random")
DEFAULT_POPULATION = 50  # NSGA-II's population when neither --population nor the space sets it


class GenerationIndex:
    """The generation of every COMPLETE trial of one study, kept up to date incrementally.

    :meth:`sync` looks only at the trials that are new or were unfinished when it last
    looked. A trial's generation is a system attribute set before the trial runs and never
    changed, so what was counted stays true.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.members: dict[int, list[int]] = {}  # generation -> numbers of its COMPLETE trials
        self._next = 0  # trials below this number were looked at
        self._unfinished: set[int] = set()
        self.examined = 0  # trials looked at over all syncs (about one per trial)
        self.trials: list[Any] = []  # the study's trials by number, as of the last sync
        #: the distributions every COMPLETE trial shares (Optuna's intersection search space)
        self.space: dict[str, Any] | None = None
        self.space_version = 0  # bumped when ``space`` changes

    def sync(self, study: Any) -> list[Any]:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        self.trials = trials
        fresh = sorted(self._unfinished) + list(range(self._next, len(trials)))
        self._next = len(trials)
        self._unfinished = set()
        self.examined += len(fresh)
        for n in fresh:
            t = trials[n]
            if not t.state.is_finished():
                self._unfinished.add(n)
            elif t.state == TrialState.COMPLETE:
                g = t.system_attrs.get(self.key, -1)
                if g >= 0:
                    self.members.setdefault(g, []).append(n)
                self._intersect(t.distributions)
        return trials

    def _intersect(self, distributions: dict[str, Any]) -> None:
        if self.space is None:
            self.space = dict(distributions)
        elif any(distributions.get(k) != d for k, d in self.space.items()):
            self.space = {k: d for k, d in self.space.items() if distributions.get(k) == d}
        else:
            return
        self.space_version += 1

    def next_generation(self, population_size: int) -> int:
        """The generation Optuna gives a new trial: the highest one, or the next when full."""
        if not self.members:
            return 0
        top = max(self.members)
        return top if len(self.members[top]) < population_size else top + 1

    def population(self, generation: int) -> list[Any]:
        """The COMPLETE trials of ``generation``, in trial order (as Optuna lists them)."""
        return [self.trials[n] for n in sorted(self.members.get(generation, ()))]


def _nsga2_classes() -> tuple[type, type]:
    import numpy as np
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution

    class CachedNSGAII(optuna.samplers.NSGAIISampler):  # type: ignore[misc]
        """Optuna's NSGA-II with its generation bookkeeping answered by a
        :class:`GenerationIndex` (same answers, no re-reading of the study)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._index = GenerationIndex(compat.generation_key(self))
            self._assigned: dict[int, int] = {}  # trial id -> generation given
            self._parents: dict[int, list[int]] = {}  # generation -> parent trial numbers
            self._space: dict[str, Any] = {}
            self._space_version = 0
            self._synced_for: int | None = None  # the trial the index was last read for

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            """Optuna's: the shared distributions of the COMPLETE trials, multi-valued ones,
            by name; recomputed only when they change."""
            self._sync(study, trial)
            if self._space_version != self._index.space_version:
                shared = self._index.space or {}
                self._space = {k: shared[k] for k in sorted(shared) if not shared[k].single()}
                self._space_version = self._index.space_version
            return dict(self._space)

        def get_trial_generation(self, study: Any, trial: Any) -> int:
            key = compat.generation_key(self)
            generation = trial.system_attrs.get(key)
            if generation is None:
                generation = self._assigned.get(compat.trial_id(trial))
            if generation is not None:
                return int(generation)
            self._sync(study, trial)
            assert self.population_size is not None
            generation = self._index.next_generation(self.population_size)
            compat.set_trial_system_attr(study, trial, key, generation)
            self._assigned[compat.trial_id(trial)] = generation
            return generation

        def _sync(self, study: Any, trial: Any) -> None:
            """Read the study once per trial, when the trial first needs it (Optuna reads
            it once per trial too, and answers the trial from that copy)."""
            if self._synced_for != compat.trial_id(trial):
                self._index.sync(study)
                self._synced_for = compat.trial_id(trial)

        def get_population(self, study: Any, generation: int) -> list[Any]:
            return self._index.population(generation)

        def get_parent_population(self, study: Any, generation: int) -> list[Any]:
            if generation == 0:
                return []
            numbers = self._parents.get(generation)
            if numbers is None:
                key = compat.parent_cache_key_prefix(self) + str(generation)
                ids = compat.study_system_attrs(study).get(key)
                trials = self._index.trials
                if ids is not None:  # chosen by this or another worker: Optuna's order
                    wanted = set(ids)
                    numbers = sorted(t.number for t in trials if compat.trial_id(t) in wanted)
                else:
                    parents = self.select_parent(study, generation)
                    compat.set_study_system_attr(study, key, [compat.trial_id(t) for t in parents])
                    # Optuna hands the first child its parents in selection order, later
                    # ones (read back by id) in trial order: the same here, for the same RNG
                    # draws and so the same trials for a seed
                    self._parents[generation] = sorted(t.number for t in parents)
                    return list(parents)
                self._parents[generation] = numbers
                return [trials[n] for n in numbers]
            trials = self._index.trials
            return [trials[n] for n in numbers]

    class DistinctNSGAII(CachedNSGAII):
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

    return CachedNSGAII, DistinctNSGAII


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
        cached, distinct = _nsga2_classes()
        if seen is None:
            return cached(population_size=size, seed=seed)
        return distinct(population_size=size, seed=seed, seen=seen)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "gp":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise unknown_name("sampler", name, SAMPLERS)
