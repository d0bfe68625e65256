"""One device's Optuna study: open it, run its missing trials, return them.

:func:`open_study` creates or joins a study and refuses one made for another model, device,
space, objectives or SLOs. :func:`run_study` runs the trials the study still lacks, in this
process or in ``--jobs`` workers (:mod:`hapi_dse.search.workers`) on a shared storage (a
scratch journal when none is given, :mod:`hapi_dse.search.scratch`), and returns every trial
as a plain list, so that a temporary storage can go.

Trial budget: ``--trials N`` is the number of COMPLETE trials the *study* should hold. A
rerun on the same ``--storage``/``--study`` runs only the missing ones (a killed search
resumes; nothing done is lost). Local workers split the missing trials exactly; workers on
other machines joining the same study stop once it holds N (each may overshoot by the one
trial it was running).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hapi_dse.errors import HapiError, SettingError, first_line
from hapi_dse.provenance import redact
from hapi_dse.search.config import SearchConfig
from hapi_dse.search.interrupts import StopOnSignal, quiet_optuna
from hapi_dse.search.live import LiveFront
from hapi_dse.search.problem import Problem
from hapi_dse.search.scratch import drop_scratch, make_scratch, scratch_base
from hapi_dse.search.storage import disk_full, drop_if_empty, open_storage, store_file
from hapi_dse.search.workers import run_workers, stop_at


def open_study(problem: Problem, storage: Any, name: str, sampler: Any) -> Any:
    """Create or load the study; refuse one made for another model, device or SLOs."""
    import optuna

    directions: list[Any] = [o.direction for o in problem.objectives]
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            directions=directions,
            sampler=sampler,
            load_if_exists=True,
        )
    except HapiError:
        raise
    except Exception as e:
        first = first_line(e)
        raise SettingError("study", f"{name!r}: cannot open the study ({redact(first)})") from None
    mine = problem.fingerprint()
    has_trials = bool(study.get_trials(deepcopy=False))
    theirs = study.user_attrs.get("hapi")  # read after the trials: a joiner may be racing us
    if theirs is None:
        if has_trials:
            raise SettingError(
                "study",
                f"{name!r} holds trials that hapi did not make; choose another {{study}} name",
                ("study",),
            )
        study.set_user_attr("hapi", mine)
        study.set_user_attr("hapi_parameters", problem.space.legend())
        with warnings.catch_warnings():  # experimental since Optuna 3.2, still there in 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.metric for o in problem.objectives])
    elif theirs != mine or [d.name.lower() for d in study.directions] != directions:
        diff = [k for k in mine if theirs.get(k) != mine[k]] or ["objectives"]
        k = diff[0]
        raise SettingError(
            "study",
            f"{name!r} was created with {k} = {theirs.get(k)!r}, not {mine[k]!r}; "
            "resume it with the same settings or choose another {study} name",
            ("study",),
        )
    return study


def complete_trials(study: Any) -> int:
    """How many COMPLETE trials ``study`` holds."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


@dataclass
class StudyRun:
    """A finished study: its trials (the storage may be gone) and how it ran."""

    trials: list[Any]
    study_name: str
    storage: str | None
    new_trials: int
    search_s: float
    sampler: str
    population: int | None


def run_study(
    problem: Problem, cfg: SearchConfig, study_name: str, *, progress: bool = True
) -> StudyRun:
    """Run the missing trials of ``study_name`` in this process or in ``cfg.jobs`` workers;
    ``progress``: a progress bar on a terminal."""
    from hapi_dse.progress import Progress

    quiet_optuna()
    population = cfg.population or problem.space.space.population
    url = cfg.storage
    scratch: tuple[Path, int] | None = None
    if cfg.jobs > 1 and url is None:
        scratch = make_scratch(scratch_base(cfg.out))
        url = f"journal:{scratch[0] / 'study.log'}"
    store = store_file(cfg.storage)
    fresh = store is not None and not os.path.lexists(store)
    finished = False
    try:
        storage = open_storage(url)
        sampler = problem.sampler(cfg.sampler, cfg.seed, population)
        study = open_study(problem, storage, study_name, sampler)
        before = complete_trials(study)
        missing = max(cfg.trials - before, 0)
        t0 = time.perf_counter()
        own = [0]  # trials this process ran (others may be joining the same study)
        if missing and cfg.jobs == 1:
            live = LiveFront(problem.objectives, problem.backbone())
            with Progress(
                missing, f"search {problem.device}", show=progress, status=live.status
            ) as bar:
                # others may join the study: stop when it is full
                full = stop_at(cfg.trials, lambda: complete_trials(study)) if storage else None

                def after_trial(study: Any, values: list[float], feasible: bool) -> None:
                    own[0] += 1
                    if bar.on:
                        live.add(values, feasible)
                    bar.update()
                    if full is not None:
                        full(study)

                problem.after_trial = after_trial
                try:
                    # Ctrl-C or SIGTERM: finish the trial in flight, stop, then interrupt
                    with StopOnSignal(study.stop), disk_full(cfg.storage, url):
                        study.optimize(
                            problem.objective,
                            n_trials=missing,
                            timeout=cfg.timeout,
                            gc_after_trial=False,
                        )
                finally:
                    problem.after_trial = None
        elif missing:
            run_workers(
                problem,
                cfg,
                url,
                study_name,
                missing,
                population,
                before,
                scratch,
                progress=progress,
            )
            storage = open_storage(url)
            study = open_study(problem, storage, study_name, sampler)
        search_s = time.perf_counter() - t0
        # the trials as a plain list, so that a temporary journal can go
        trials = study.get_trials(deepcopy=False)
        new = own[0] if cfg.jobs == 1 else complete_trials(study) - before
        finished = True
    finally:
        if scratch is not None:
            drop_scratch(*scratch)
        if fresh and not finished and store is not None:
            drop_if_empty(store)
    return StudyRun(
        trials=trials,
        study_name=study_name,
        storage=redact(cfg.storage),
        new_trials=new,
        search_s=search_s,
        sampler=cfg.sampler,
        population=population if cfg.sampler == "nsga2" else None,
    )


__all__ = ["StudyRun", "complete_trials", "open_study", "run_study"]
