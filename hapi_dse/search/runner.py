"""``hapi search``: an Optuna study per device over a search space, scored by the cost model.

One :class:`Problem` per device bundles what a trial needs (space, cost model, SLOs,
objectives). :func:`run_search` builds it, runs the study (in memory, on any Optuna storage,
or as ``--jobs N`` worker processes sharing a journal file), then hands every trial to
:mod:`hapi_dse.search.outputs`.

Trial budget: ``--trials N`` is the number of COMPLETE trials the *study* should hold. A
rerun on the same ``--storage``/``--study`` runs only the missing ones (a killed search
resumes; nothing done is lost). Local workers split the missing trials exactly; workers on
other machines joining the same study stop once it holds N (each may overshoot by the one
trial it was running).

Interrupts: Ctrl-C or SIGTERM lets the trial in flight finish (a second one cuts it short),
so a storage holds whole trials only; ``--jobs`` workers never outlive the search process
(:func:`_worker`); a journal file survives killed writers and full disks
(:mod:`hapi_dse.search.storage`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hapi_dse.cost import (
    SLO,
    CostModel,
    Design,
    Objective,
    SegmentCosts,
    default_objectives,
    parse_objectives,
    parse_slos,
)
from hapi_dse.errors import ArtefactError, HapiError, UsageError, first_line, unknown_name
from hapi_dse.provenance import redact
from hapi_dse.run import ExitStats, RunDir, resolve_run
from hapi_dse.search.sampling import SAMPLERS, make_sampler
from hapi_dse.search.space import BoundSpace, load_space
from hapi_dse.search.storage import (
    disk_full,
    drop_if_empty,
    open_storage,
    store_file,
)

log = logging.getLogger(__name__)

DEFAULT_TRIALS = 1000
WORKER_STOP_GRACE_S = 5  # workers asked to stop get this long to finish their trial
SCRATCH_PREFIX = ".hapi-journal-"
SCRATCH_OWNER = "owner.lock"
SCRATCH_ORPHAN_AGE_S = 600  # an unlocked scratch directory untouched this long is stale


@dataclass
class SearchConfig:
    """Everything ``hapi search`` was asked to do (the CLI only fills this in)."""

    devices: tuple[str, ...]
    model: str | None = None
    profiles: str | None = None
    space: str = "default"
    slos: tuple[str, ...] = ()
    objectives: str | None = None
    sampler: str = "nsga2"
    trials: int = DEFAULT_TRIALS
    timeout: float | None = None
    seed: int = 0
    storage: str | None = None
    study: str | None = None
    jobs: int = 1
    out: Path | None = None
    pick: str | None = None
    population: int | None = None
    verify: int = 0  # export and measure this many Pareto designs near the pick, re-pick
    overwrite: bool = False  # replace previous results in <out>/<device>/

    def settings(self) -> dict[str, Any]:
        return {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in self.__dict__.items()
            if k != "storage"
        } | {"storage": redact(self.storage)}


class Evaluator:
    """The cost model with a cache by design (samplers propose the same design often)."""

    def __init__(self, model: CostModel) -> None:
        self.model = model
        self.cache: dict[tuple[Any, ...], dict[str, float]] = {}
        self.misses = 0

    def __call__(self, design: Design) -> dict[str, float]:
        m = self.cache.get(design.key)
        if m is None:
            m = self.model.evaluate(design)
            self.cache[design.key] = m
            self.misses += 1
        return m


@dataclass
class Problem:
    """One device's search: inputs, space, scoring."""

    device: str
    model_id: str
    space: BoundSpace
    val: Evaluator
    test: Evaluator
    objectives: list[Objective]
    slos: list[SLO]
    costs: SegmentCosts
    inputs: dict[str, Path] = field(default_factory=dict)
    table_source: str = ""
    table_sidecar: dict[str, Any] = field(default_factory=dict)
    table_path: Path | None = None

    #: called after each trial this process runs (progress, stopping); set by the runner.
    #: Not an Optuna callback: optimize() deep-copies the trial for those (~1 ms each).
    after_trial: Callable[[Any], None] | None = None

    def objective(self, trial: Any) -> list[float]:
        design = self.space.suggest(trial)
        metrics = self.val(design)
        for slo in self.slos:
            trial.set_constraint(slo.name, slo.violation(metrics))
        if self.after_trial is not None:
            self.after_trial(trial.study)
        return [metrics[o.metric] for o in self.objectives]

    def seen(self, params: Any) -> bool:
        """Whether the design these trial parameters decode to has been scored."""
        return self.space.decode(params).key in self.val.cache

    def sampler(self, name: str, seed: int | None, population: int | None) -> Any:
        return make_sampler(name, seed, population, seen=self.seen)

    def fingerprint(self) -> dict[str, Any]:
        """What a study must agree on to be resumed or joined."""
        return {
            "model_id": self.model_id,
            "device": self.device,
            "space": self.space.space.name,
            "positions": list(self.space.positions),
            "heads": list(self.space.heads),
            "objectives": [o.metric for o in self.objectives],
            "slos": [s.describe() for s in self.slos],
        }


def build_problem(
    device: str, run: RunDir, val: ExitStats, test: ExitStats, cfg: SearchConfig
) -> Problem:
    """Load the device's table and check the space, objectives and SLOs against it."""
    from hapi_dse.profiling.table import load_table

    table = load_table(device, run.model_id, cfg.profiles)
    costs = SegmentCosts.from_table(table, val)
    test_costs = SegmentCosts.from_table(table, test)
    space = load_space(cfg.space).bind(val, run.model_id)
    objectives = (
        parse_objectives(cfg.objectives) if cfg.objectives else default_objectives(costs.has_energy)
    )
    slos = parse_slos(cfg.slos)
    if not costs.has_energy:
        for name in [o.metric for o in objectives] + [s.metric for s in slos]:
            if name == "energy_mj":
                raise UsageError(
                    f"the {device} table of {run.model_id} has no energy figures, so energy "
                    "can be neither an objective nor an SLO; profile with an energy meter "
                    "or a device spec"
                )
    table_path = Path(table.path) if getattr(table, "path", None) else None
    inputs: dict[str, Path] = {
        "exits_val": run.path / "exits_val.npz",
        "exits_test": run.path / "exits_test.npz",
    }
    if table_path is not None and table_path.is_file():
        inputs["table"] = table_path
        if table_path.with_suffix(".json").is_file():
            inputs["table_sidecar"] = table_path.with_suffix(".json")
    if space.space.path is not None:
        inputs["space"] = space.space.path
    model = CostModel(val, costs)
    for policy in space.space.policies:
        model.prepare(policy, space.space.grid(policy))
    return Problem(
        device=device,
        model_id=run.model_id,
        space=space,
        val=Evaluator(model),
        test=Evaluator(CostModel(test, test_costs)),
        objectives=objectives,
        slos=slos,
        costs=costs,
        inputs=inputs,
        table_source=str(costs.source),
        table_sidecar=dict(table.sidecar),
        table_path=table_path,
    )


# -- Optuna plumbing --------------------------------------------------------------------------
# -- interrupts -------------------------------------------------------------------------------
_HARD_STOP = threading.Event()  # set once a second signal interrupts a trial
_FAILED_WITH_NONE = re.compile(r"Trial \d+ failed with value None\.")


def _not_repeated(record: logging.LogRecord) -> bool:
    """Drop Optuna's report of a trial that raised (its traceback, then "failed with value
    None"): optimize() raises the error again, and the CLI reports it once (one line for an
    interrupt or a full disk, the traceback for a bug)."""
    if _HARD_STOP.is_set() or record.exc_info:
        return False
    return not _FAILED_WITH_NONE.fullmatch(record.getMessage())


class _StopOnSignal:
    """SIGINT and SIGTERM while a study runs: the first lets the trial in flight finish and
    then stops the study, so the storage holds only whole trials and a rerun resumes with the
    exact count; a second one interrupts at once. On leaving, a signal received goes on to
    the handler that was there before (``KeyboardInterrupt`` for SIGINT, the CLI's for
    SIGTERM); with ``deliver=False`` (workers) it is only recorded. Signals that were ignored
    stay ignored; outside the main thread nothing changes."""

    def __init__(
        self,
        stop: Callable[[], None],
        deliver: bool = True,
        on_signal: Callable[[], None] | None = None,
    ) -> None:
        self.stop = stop
        self.deliver = deliver
        self.on_signal = on_signal  # called on the first signal
        self.received: int | None = None
        self._saved: dict[int, Any] = {}
        self._hook: Any = None

    def __enter__(self) -> _StopOnSignal:
        _HARD_STOP.clear()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                prev = signal.getsignal(sig)
                if prev is not signal.SIG_IGN and prev is not None:
                    self._saved[sig] = prev
                    signal.signal(sig, self._handle)
            self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def _unraisable(self, args: Any) -> None:
        """An interrupt raised while Python ran a finaliser or a weakref callback is
        swallowed there ("Exception ignored in ..." and a traceback): send it again, so that
        it lands in the search's own code, and print nothing."""
        if args.exc_type is not None and issubclass(args.exc_type, KeyboardInterrupt):
            signal.raise_signal(self.received or signal.SIGINT)
            return
        self._hook(args)

    def __exit__(self, *exc: Any) -> None:
        if self._hook is not None:
            sys.unraisablehook, self._hook = self._hook, None
        self._put_back()
        try:
            if self.received is not None and self.deliver:
                self._deliver(self.received)
        finally:
            if _HARD_STOP.is_set():
                logging.disable(logging.NOTSET)

    def _put_back(self) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.received is None
        self.received = signum
        if first:
            if self.on_signal is not None:
                self.on_signal()
            try:
                self.stop()
                return
            except RuntimeError:  # Study.stop() outside optimize(): nothing to finish
                pass
        if self.deliver:
            # what the interrupted code logs on its way out (Optuna's failed trial, a
            # database driver's cursor) is noise: the CLI says "interrupted" in one line
            _HARD_STOP.set()
            logging.disable(logging.CRITICAL)
            self._put_back()
            self._deliver(signum)

    def _deliver(self, signum: int) -> None:
        """Act on ``signum`` as the handler this one replaced would: raise or end."""
        handler = self._saved.get(signum, signal.SIG_DFL)
        if callable(handler):
            handler(signum, None)  # raises: KeyboardInterrupt, or the CLI's for SIGTERM
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)  # the default action: the process ends here
        raise KeyboardInterrupt  # pragma: no cover - the signal was blocked


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna.study._optimize").addFilter(_not_repeated)


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
        raise UsageError(f"--study {name!r}: cannot open the study ({redact(first)})") from None
    mine = problem.fingerprint()
    has_trials = bool(study.get_trials(deepcopy=False))
    theirs = study.user_attrs.get("hapi")  # read after the trials: a joiner may be racing us
    if theirs is None:
        if has_trials:
            raise UsageError(
                f"--study {name!r} holds trials that hapi did not make; choose another --study name"
            )
        study.set_user_attr("hapi", mine)
    elif theirs != mine or [d.name.lower() for d in study.directions] != directions:
        diff = [k for k in mine if theirs.get(k) != mine[k]] or ["objectives"]
        k = diff[0]
        raise UsageError(
            f"--study {name!r} was created with {k} = {theirs.get(k)!r}, not {mine[k]!r}; "
            "resume it with the same settings or choose another --study name"
        )
    return study


def _complete(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _stop_at(total: int, counter: Callable[[], int]) -> Callable[[Any], None]:
    """Stop a worker once the study holds ``total`` complete trials (this one included)."""

    def check(study: Any) -> None:
        if counter() + 1 >= total:
            study.stop()

    return check


# -- worker processes -------------------------------------------------------------------------
# State inherited by forked workers (set just before forking).
_FORK_STATE: dict[str, Any] = {}

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


def _worker(index: int, share: int) -> None:
    """A ``--jobs`` worker (forked): runs up to ``share`` trials of the shared study.

    It never outlives the parent: Ctrl-C, which reaches the whole process group, is left to
    the parent; SIGTERM, from the parent or from Linux when the parent dies, lets the trial in
    flight finish and ends the worker (an alarm ends it anyway after
    :data:`WORKER_STOP_GRACE_S`). An orphan removes the scratch journal when it is the last one
    using it. A :class:`HapiError` goes to the parent as one line.
    """
    s = _FORK_STATE
    problem, cfg, parent = s["problem"], s["cfg"], s["parent"]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    try:
        if os.getppid() != parent:  # it died before prctl
            return
        _quiet_optuna()
        import optuna
        from optuna.trial import TrialState

        storage = open_storage(s["url"])
        sampler = problem.sampler(cfg.sampler, cfg.seed + 1000 * (index + 1), s["population"])
        study = optuna.load_study(study_name=s["study"], storage=storage, sampler=sampler)
        study_id = storage.get_study_id_from_name(s["study"])

        def counter() -> int:
            return int(storage.get_n_trials(study_id, state=(TrialState.COMPLETE,)))

        full = _stop_at(cfg.trials, counter)

        def after_trial(study: Any) -> None:
            full(study)
            if os.getppid() != parent:
                study.stop()

        def deadline() -> None:
            signal.alarm(WORKER_STOP_GRACE_S)  # SIGALRM's default action ends the process

        problem.after_trial = after_trial
        with (
            _StopOnSignal(study.stop, deliver=False, on_signal=deadline),
            disk_full(cfg.storage, s["url"]),
        ):
            study.optimize(
                problem.objective, n_trials=share, timeout=cfg.timeout, gc_after_trial=False
            )
    except KeyboardInterrupt:  # SIGTERM before the study ran (the CLI's handler): just end
        pass
    except HapiError as e:
        s["errors"].put(str(e))
        sys.exit(1)
    finally:
        if s.get("scratch") is not None and os.getppid() != parent:
            _leave_scratch(*s["scratch"])


def _stop_workers(procs: list[Any], grace_s: float = WORKER_STOP_GRACE_S) -> None:
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


# -- the scratch journal of --jobs ------------------------------------------------------------
def _make_scratch(base: Path) -> tuple[Path, int]:
    """A new directory for the journal of ``--jobs`` and a descriptor holding a shared
    ``flock`` on its ``owner.lock``. Forked workers inherit the descriptor, so the lock is
    held until the parent and every worker are gone: a directory whose lock can be taken is
    nobody's, whatever killed its search, and the next search removes it."""
    import fcntl

    _sweep_scratch(base)
    d = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=base))
    fd = -1
    try:
        tmp = d / f".{SCRATCH_OWNER}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.rename(tmp, d / SCRATCH_OWNER)  # appears locked: a sweeper never sees it free
    except BaseException:
        if fd >= 0:
            os.close(fd)
        shutil.rmtree(d, ignore_errors=True)
        raise
    return d, fd


def _sweep_scratch(base: Path) -> None:
    """Remove the scratch journals in ``base`` that no live process uses."""
    try:
        with os.scandir(base) as it:
            dirs = [
                Path(e.path)
                for e in it
                if e.name.startswith(SCRATCH_PREFIX) and e.is_dir(follow_symlinks=False)
            ]
    except OSError:
        return
    for d in dirs:
        _remove_if_unowned(d)


def _remove_if_unowned(d: Path) -> None:
    import fcntl

    try:
        fd = os.open(d / SCRATCH_OWNER, os.O_RDONLY)
    except FileNotFoundError:  # an older hapi's, or one being made: only if long untouched
        try:
            newest = max([d.stat().st_mtime] + [p.stat().st_mtime for p in d.iterdir()])
        except OSError:
            return
        if time.time() - newest > SCRATCH_ORPHAN_AGE_S:
            shutil.rmtree(d, ignore_errors=True)
        return
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass  # in use
    else:
        shutil.rmtree(d, ignore_errors=True)
    finally:
        os.close(fd)


def _leave_scratch(d: Path, owner: int) -> None:
    """An orphaned worker's exit: drop its hold, remove the directory if it was the last."""
    with contextlib.suppress(OSError):
        os.close(owner)
    _remove_if_unowned(d)


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


def run_study(problem: Problem, cfg: SearchConfig, study_name: str) -> StudyRun:
    """Run the missing trials of ``study_name`` in this process or in ``cfg.jobs`` workers."""
    from hapi_dse.progress import Progress

    _quiet_optuna()
    population = cfg.population or problem.space.space.population
    url = cfg.storage
    scratch: tuple[Path, int] | None = None
    if cfg.jobs > 1 and url is None:
        scratch = _make_scratch(_scratch(cfg))
        url = f"journal:{scratch[0] / 'study.log'}"
    store = store_file(cfg.storage)
    fresh = store is not None and not os.path.lexists(store)
    finished = False
    try:
        storage = open_storage(url)
        sampler = problem.sampler(cfg.sampler, cfg.seed, population)
        study = open_study(problem, storage, study_name, sampler)
        before = _complete(study)
        missing = max(cfg.trials - before, 0)
        t0 = time.perf_counter()
        own = [0]  # trials this process ran (others may be joining the same study)
        if missing and cfg.jobs == 1:
            with Progress(missing, f"search {problem.device}") as bar:
                # others may join the study: stop when it is full
                full = _stop_at(cfg.trials, lambda: _complete(study)) if storage else None

                def after_trial(study: Any) -> None:
                    own[0] += 1
                    bar.update()
                    if full is not None:
                        full(study)

                problem.after_trial = after_trial
                try:
                    # Ctrl-C or SIGTERM: finish the trial in flight, stop, then interrupt
                    with _StopOnSignal(study.stop), disk_full(cfg.storage, url):
                        study.optimize(
                            problem.objective,
                            n_trials=missing,
                            timeout=cfg.timeout,
                            gc_after_trial=False,
                        )
                finally:
                    problem.after_trial = None
        elif missing:
            _run_workers(problem, cfg, url, study_name, missing, population, before, scratch)
            storage = open_storage(url)
            study = open_study(problem, storage, study_name, sampler)
        search_s = time.perf_counter() - t0
        # the trials as a plain list, so that a temporary journal can go
        trials = study.get_trials(deepcopy=False)
        new = own[0] if cfg.jobs == 1 else _complete(study) - before
        finished = True
    finally:
        if scratch is not None:
            with contextlib.suppress(OSError):
                os.close(scratch[1])
            shutil.rmtree(scratch[0], ignore_errors=True)
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


def _scratch(cfg: SearchConfig) -> Path:
    """Where the temporary journal of ``--jobs`` goes: RAM (``/dev/shm``) when there is one,
    as the journal appends and fsyncs ~15 records per trial, else beside the results."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    base = cfg.out if cfg.out is not None else Path(".")
    base.mkdir(parents=True, exist_ok=True)
    return base


def _run_workers(
    problem: Problem,
    cfg: SearchConfig,
    url: str | None,
    study_name: str,
    missing: int,
    population: int | None,
    before: int,
    scratch: tuple[Path, int] | None = None,
) -> None:
    """Run the missing trials in ``cfg.jobs`` forked workers on the shared storage ``url``.

    The workers never outlive this process (see :func:`_worker`); on an interrupt they are
    stopped after their trial before the interrupt goes on."""
    from hapi_dse.progress import Progress

    jobs = min(cfg.jobs, missing)
    shares = [missing // jobs + (i < missing % jobs) for i in range(jobs)]
    methods = multiprocessing.get_all_start_methods()
    if "fork" not in methods:  # pragma: no cover - Windows
        raise UsageError("--jobs needs the 'fork' start method (Linux or macOS); use --jobs 1")
    ctx = multiprocessing.get_context("fork")
    errors = ctx.SimpleQueue()
    _FORK_STATE.update(
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
        ctx.Process(target=_worker, args=(i, share), daemon=True) for i, share in enumerate(shares)
    ]
    try:
        for p in procs:
            p.start()
        with Progress(missing, f"search {problem.device} ({jobs} workers)") as bar:
            storage = open_storage(url) if bar.on else None
            while any(p.is_alive() for p in procs):
                multiprocessing.connection.wait([p.sentinel for p in procs if p.is_alive()], 0.2)
                if any(p.exitcode not in (None, 0) for p in procs):
                    break  # a worker failed: stop the others rather than finish without it
                if storage is not None:  # a terminal is watching: poll the shared study
                    from optuna.trial import TrialState

                    sid = storage.get_study_id_from_name(study_name)
                    done = int(storage.get_n_trials(sid, state=(TrialState.COMPLETE,)))
                    bar.update(max(min(done - before, missing) - bar.n, 0))
        _stop_workers(procs)  # reaps them (all done, unless one failed)
    except BaseException:
        _stop_workers(procs)
        raise
    finally:
        _FORK_STATE.clear()
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    errors.close()
    if messages:
        raise ArtefactError(messages[0])
    failed = [i for i, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        raise ArtefactError(
            f"search worker(s) {failed} of {jobs} failed (exit codes "
            f"{[procs[i].exitcode for i in failed]}); their errors are above"
        )


def study_name_for(cfg: SearchConfig, device: str, model_id: str) -> str:
    if cfg.study is None:
        return f"hapi-{model_id}-{device}"
    return cfg.study if len(cfg.devices) == 1 else f"{cfg.study}-{device}"


def default_out(cfg: SearchConfig, run: RunDir) -> Path:
    """``--out`` default: ``RUN_DIR/search`` for ``--model``; ``runs/<example>/search`` for
    the bundled example (the package directory may be read-only)."""
    if cfg.out is not None:
        return Path(cfg.out)
    if cfg.model is None:
        return Path("runs") / run.path.name / "search"
    return run.path / "search"


def check_config(cfg: SearchConfig) -> None:
    if cfg.sampler not in SAMPLERS:
        raise unknown_name("sampler", cfg.sampler, SAMPLERS)
    if cfg.trials < 1:
        raise UsageError(f"--trials must be >= 1, but got {cfg.trials}")
    if cfg.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, but got {cfg.jobs}")
    if cfg.timeout is not None and not (math.isfinite(cfg.timeout) and cfg.timeout > 0):
        raise UsageError(f"--timeout must be > 0 seconds, but got {cfg.timeout:g}")
    if not cfg.devices:
        raise UsageError("--device: expected one or more device names, e.g. pixel6")
    if cfg.study is not None and cfg.storage is None and cfg.jobs == 1:
        raise UsageError("--study names a study in --storage; give --storage URL too")
    parse_slos(cfg.slos)
    if cfg.objectives:
        parse_objectives(cfg.objectives)
    if cfg.verify < 0:
        raise UsageError(f"--verify must be >= 0, but got {cfg.verify}")


def run_search(cfg: SearchConfig, echo: Callable[[str], None] | None = None) -> list[Any]:
    """Search every device of ``cfg``; write ``<out>/<device>/``. Returns one
    :class:`~hapi_dse.search.outputs.DeviceResult` per device."""
    from hapi_dse.provenance import check_out_dir
    from hapi_dse.search.outputs import collect, write_results

    check_config(cfg)
    t0 = time.perf_counter()
    run = resolve_run(cfg.model)
    val, test = run.stats("val"), run.stats("test")
    out = default_out(cfg, run)
    load_s = time.perf_counter() - t0
    problems = [build_problem(d, run, val, test, cfg) for d in cfg.devices]  # fail early
    if cfg.verify:
        from hapi_dse.search.verify import check_verifiable

        for p in problems:
            check_verifiable(p.device, p.table_sidecar, p.table_path)
    for p in problems:  # before any search: a refused --out must not cost a search
        check_out_dir(out / p.device, "search", cfg.overwrite)
    results = []
    for problem in problems:
        t1 = time.perf_counter()
        name = study_name_for(cfg, problem.device, problem.model_id)
        study = run_study(problem, cfg, name)
        result = collect(problem, study, cfg)
        result.timings.update(load_s=load_s, search_s=study.search_s)
        if cfg.verify:
            from hapi_dse.search.verify import verify

            verify(result, run, cfg, out)
        write_results(result, out / problem.device, cfg)
        result.timings["device_s"] = time.perf_counter() - t1
        results.append(result)
        if echo is not None:
            from hapi_dse.search.outputs import console_report

            echo(console_report(result))
    return results


__all__: Sequence[str] = ["DEFAULT_TRIALS", "SAMPLERS", "SearchConfig", "run_search"]
