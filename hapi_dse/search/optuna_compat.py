"""Every use hapi makes of Optuna's private API, in one place.

Optuna gives no public way to do these things; each is what Optuna's own code does, and
``tests/test_optuna_compat.py`` exercises each function here against a real study, so an
Optuna release that moves one fails there, under the function's name, not somewhere in a
search. ``setup.cfg`` caps Optuna below the next major release and ``constraints.txt`` pins
the release CI tests.

Why each is needed:

* :func:`trial_id`, :func:`set_trial_system_attr`, :func:`study_system_attrs` and
  :func:`set_study_system_attr`: the NSGA-II bookkeeping of
  :mod:`hapi_dse.search.sampling` answers Optuna's ``get_trial_generation`` and
  ``get_parent_population`` from an index instead of re-reading the study, and must read and
  write the same storage records Optuna's base class does (a trial's generation, a
  generation's parent ids), so that workers running plain Optuna or hapi share a study.
  Storage calls are keyed by a trial's storage id (``FrozenTrial._trial_id``, not its
  number), which only the private attributes give; a study's system attributes have no
  public reader or writer (Optuna 5).
* :func:`generation_key` and :func:`parent_cache_key_prefix`: the names of those records,
  per sampler class (Optuna's ``BaseGASampler`` class methods, private).
* :func:`compute_hypervolume`: Optuna's exact hypervolume (WFG) for three objectives or
  more, in ``optuna._hypervolume``; the live progress line's figure
  (:mod:`hapi_dse.search.live`).
* :data:`OPTIMIZE_LOGGER`: the logger Optuna's ``study.optimize`` reports a trial's
  failure on, which :func:`hapi_dse.search.interrupts.quiet_optuna` filters (the name of a
  private module).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: the logger of ``optuna.study._optimize``, where ``study.optimize`` logs a failed trial
OPTIMIZE_LOGGER = "optuna.study._optimize"


def trial_id(trial: Any) -> int:
    """The storage id of a trial (a ``FrozenTrial`` or a ``Trial``): what storage calls and
    Optuna's GA parent records name a trial by (its ``number`` counts within the study)."""
    return int(trial._trial_id)


def set_trial_system_attr(study: Any, trial: Any, key: str, value: Any) -> None:
    """Set a system attribute of ``trial`` (a ``FrozenTrial`` as samplers receive it) in the
    study's storage, as Optuna's GA samplers record a trial's generation."""
    study._storage.set_trial_system_attr(trial_id(trial), key, value)


def study_system_attrs(study: Any) -> dict[str, Any]:
    """A copy of the study's system attributes as the storage holds them."""
    return dict(study._storage.get_study_system_attrs(study._study_id))


def set_study_system_attr(study: Any, key: str, value: Any) -> None:
    """Set a system attribute of the study, as Optuna's GA samplers cache a parent
    population."""
    study._storage.set_study_system_attr(study._study_id, key, value)


def generation_key(sampler: Any) -> str:
    """The trial system attribute that holds a trial's generation for a GA sampler (its
    class's own key: ``NSGAIISampler:generation``, ``CachedNSGAII:generation``...)."""
    return str(sampler._get_generation_key())


def parent_cache_key_prefix(sampler: Any) -> str:
    """The prefix of the study system attribute (prefix + generation) that holds the trial
    ids of a generation's parent population for a GA sampler."""
    return str(sampler._get_parent_cache_key_prefix())


def compute_hypervolume(
    losses: np.ndarray, reference: np.ndarray, assume_pareto: bool = False
) -> float:
    """The volume that the rows of ``losses`` (every column minimised) dominate up to the
    point ``reference``, exactly (Optuna's WFG). ``assume_pareto``: no row dominates
    another (only faster)."""
    from optuna._hypervolume import compute_hypervolume as wfg

    return float(wfg(losses, reference, assume_pareto=assume_pareto))


__all__ = [
    "OPTIMIZE_LOGGER",
    "compute_hypervolume",
    "generation_key",
    "parent_cache_key_prefix",
    "set_study_system_attr",
    "set_trial_system_attr",
    "study_system_attrs",
    "trial_id",
]
