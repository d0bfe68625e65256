"""The ``--jobs`` worker pool: forked processes running one study's missing trials on a
shared storage.

:func:`run_workers` forks the workers, shows progress and reaps them; each runs
:func:`worker` with everything it needs in one :class:`WorkerSetup` handed to it as an
argument (fork copies it into the child; nothing is pickled). Workers never outlive the
search process: Linux signals them when it dies (:func:`_die_with_parent`), and an orphan
that was the last user of the scratch journal removes it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hapi_dse.errors import ArtefactError, HapiError, SettingError
from hapi_dse.search.config import SearchConfig
from hapi_dse.search.interrupts import StopOnSignal, quiet_optuna
from hapi_dse.search.problem import Problem
from hapi_dse.search.scratch import leave_scratch
from hapi_dse.search.storage import disk_full, open_storage

WORKER_STOP_GRACE_S = 5  # workers asked to stop get this long to finish their trial


@dataclass
class WorkerSetup:
    """What every worker of one search gets (its index and share of trials come apart)."""

    problem: Problem
    cfg: SearchConfig
    url: str | None  # the shared storage
    study: str
    population: int | None
    parent: int  # the search process: a worker whose parent changed is an orphan
    errors: Any  # a SimpleQueue: a worker's HapiError goes to the parent as one line
    scratch: tuple[Path, int] | None = None  # the scratch journal and its owner lock


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> None:
    """Have Linux send this process SIGTERM when its parent dies, even by SIGKILL (elsewhere
    a worker only notices its new parent after a trial)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        pass


def stop_at(total: int, counter: Callable[[], int]) -> Callable[[Any], None]:
    """Stop a worker once the study holds ``total`` complete trials (this one included)."""

    def check(study: Any) -> None:
        if counter() + 1 >= total:
            study.stop()

    return check


def worker(setup: WorkerSetup, index: int, share: int) -> None:
    """A ``--jobs`` worker (forked): runs up to ``share`` trials of the shared study.

    It never outlives the parent: Ctrl-C, which reaches the whole process group, is left to
    the parent; SIGTERM, from the parent or from Linux when the parent dies, lets the trial in
    flight finish and ends the worker (an alarm ends it anyway after
    :data:`WORKER_STOP_GRACE_S`). An orphan removes the scratch journal when it is the last one
    using it. A :class:`HapiError` goes to the parent as one line.
    """
    problem, cfg, parent = setup.problem, setup.cfg, setup.parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    try:
        if os.getppid() != parent:  # it died before prctl
            return
        quiet_optuna()
        import optuna
        from optuna.trial import TrialState

        storage = open_storage(setup.url)
        sampler = problem.sampler(cfg.sampler, cfg.seed + 1000 * (index + 1), setup.population)
        study = optuna.load_study(study_name=setup.study, storage=storage, sampler=sampler)

        def counter() -> int:
            # through the study: on a database its storage is Optuna's cache, which reads
            # only the trials that changed; the bare storage would reload every trial
            return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

        full = stop_at(cfg.trials, counter)

        def after_trial(study: Any, values: list[float], feasible: bool) -> None:
            full(study)
            if os.getppid() != parent:
                study.stop()

        def deadline() -> None:
            signal.alarm(WORKER_STOP_GRACE_S)  # SIGALRM's default action ends the process

        problem.after_trial = after_trial
        with (
            StopOnSignal(study.stop, deliver=False, on_signal=deadline),
            disk_full(cfg.storage, setup.url),
        ):
            study.optimize(
                problem.objective, n_trials=share, timeout=cfg.timeout, gc_after_trial=False
            )
    except KeyboardInterrupt:  # SIGTERM before the study ran (the CLI's handler): just end
        pass
    except HapiError as e:
        # a bad setting goes as its parts, for the parent's command line to name by its flag
        setup.errors.put((e.field, e.message, e.refs) if isinstance(e, SettingError) else str(e))
        sys.exit(1)
    finally:
        if setup.scratch is not None and os.getppid() != parent:
            leave_scratch(*setup.scratch)


def stop_workers(procs: list[Any], grace_s: float = WORKER_STOP_GRACE_S) -> None:
    """Ask the live workers to stop after their trial (SIGTERM), wait up to ``grace_s``, kill
    the rest (at once on another Ctrl-C), and reap them all."""
    started = [p for p in procs if p.pid is not None]
    hurry: list[int] = []
    prev: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            prev[sig] = signal.signal(sig, lambda signum, frame: hurry.append(signum))
    try:
        for p in started:
            if p.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in started:
            while p.is_alive() and not hurry and time.monotonic() < deadline:
                p.join(0.05)
        for p in started:
            if p.is_alive():
                p.kill()
        for p in started:
            p.join()
    finally:
        for signum, handler in prev.items():
            signal.signal(signum, handler)


def _load_study(url: str | None, name: str) -> Any:
    import optuna

    return optuna.load_study(study_name=name, storage=open_storage(url))


def run_workers(
    problem: Problem,
    cfg: SearchConfig,
    url: str | None,
    study_name: str,
    missing: int,
    population: int | None,
    before: int,
    scratch: tuple[Path, int] | None = None,
    *,
    progress: bool = True,
) -> None:
    """Run the missing trials in ``cfg.jobs`` forked workers on the shared storage ``url``
    (``progress``: a progress bar on a terminal).

    The workers never outlive this process (see :func:`worker`); on an interrupt they are
    stopped after their trial before the interrupt goes on."""
    from hapi_dse.progress import Progress

    jobs = min(cfg.jobs, missing)
    shares = [missing // jobs + (i < missing % jobs) for i in range(jobs)]
    methods = multiprocessing.get_all_start_methods()
    if "fork" not in methods:  # pragma: no cover - Windows
        raise SettingError(
            "jobs", "needs the 'fork' start method (Linux or macOS); use {jobs} 1", ("jobs",)
        )
    ctx = multiprocessing.get_context("fork")
    errors = ctx.SimpleQueue()
    setup = WorkerSetup(
        problem=problem,
        cfg=cfg,
        url=url,
        study=study_name,
        population=population,
        parent=os.getpid(),
        errors=errors,
        scratch=scratch,
    )
    procs = [
        ctx.Process(target=worker, args=(setup, i, share), daemon=True)
        for i, share in enumerate(shares)
    ]
    try:
        for p in procs:
            p.start()
        with Progress(missing, f"search {problem.device} ({jobs} workers)", show=progress) as bar:
            # a terminal is watching: poll the shared study (through Optuna's cache of it,
            # which reads only the trials that changed)
            shared = _load_study(url, study_name) if bar.on else None
            while any(p.is_alive() for p in procs):
                multiprocessing.connection.wait([p.sentinel for p in procs if p.is_alive()], 0.2)
                if any(p.exitcode not in (None, 0) for p in procs):
                    break  # a worker failed: stop the others rather than finish without it
                if shared is not None:
                    from optuna.trial import TrialState

                    done = len(shared.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
                    bar.update(max(min(done - before, missing) - bar.n, 0))
        stop_workers(procs)  # reaps them (all done, unless one failed)
    except BaseException:
        stop_workers(procs)
        raise
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    errors.close()
    if messages:
        first = messages[0]
        raise SettingError(*first) if isinstance(first, tuple) else ArtefactError(first)
    failed = [i for i, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        raise ArtefactError(
            f"search worker(s) {failed} of {jobs} failed (exit codes "
            f"{[procs[i].exitcode for i in failed]}); their errors are above"
        )


__all__ = [
    "WORKER_STOP_GRACE_S",
    "WorkerSetup",
    "run_workers",
    "stop_at",
    "stop_workers",
    "worker",
]
