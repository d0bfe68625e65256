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
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import shutil
import tempfile
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
from hapi_dse.errors import ArtefactError, HapiError, UsageError, unknown_name
from hapi_dse.provenance import redact
from hapi_dse.run import ExitStats, RunDir, resolve_run
from hapi_dse.search.sampling import SAMPLERS, make_sampler
from hapi_dse.search.space import BoundSpace, load_space

log = logging.getLogger(__name__)

DEFAULT_TRIALS = 1000
JOURNAL_LOCK_GRACE_S = 5


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
def journal_path(url: str) -> Path | None:
    """``journal:PATH`` / ``journal:///abs/path`` / a path ending in .log, .journal, .jsonl."""
    if url.startswith("journal:"):
        rest = url[len("journal:") :]
        return Path(rest[2:] if rest.startswith("///") else rest)
    if "://" not in url and Path(url).suffix in (".log", ".journal", ".jsonl"):
        return Path(url)
    return None


def _with_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is
    installed (the ``postgres`` extra installs psycopg2-binary)."""
    import importlib.util

    m = re.match(r"^(postgresql|postgres)://", url)
    if (
        m
        and importlib.util.find_spec("psycopg") is None
        and importlib.util.find_spec("psycopg2") is not None
    ):
        return "postgresql+psycopg2://" + url[m.end() :]
    return url


SCHEMA_RACE_RETRIES = 5


def open_storage(url: str | None) -> Any:
    """An Optuna storage for ``--storage`` (``None``: in memory)."""
    if url is None:
        return None
    import optuna

    path = journal_path(url)
    if path is not None:
        from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

        path.parent.mkdir(parents=True, exist_ok=True)
        # a killed process leaves its lock behind; a lock is held for milliseconds, so one
        # older than 5 s is stale (Optuna's default waits 30 s)
        lock = JournalFileSymlinkLock(str(path), grace_period=JOURNAL_LOCK_GRACE_S)
        backend = JournalFileBackend(str(path), lock_obj=lock)
        return optuna.storages.JournalStorage(backend)
    if not re.match(r"^[a-z][a-z0-9+]*://", url):
        raise UsageError(
            f"--storage {redact(url)!r}: expected an Optuna storage URL: sqlite:///FILE.db, "
            "postgresql://USER@HOST:PORT/DB, or journal:FILE for a journal file"
        )
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            return optuna.storages.RDBStorage(
                _with_driver(url), engine_kwargs={"pool_pre_ping": True}
            )
        except ModuleNotFoundError as e:
            raise UsageError(
                f"--storage {redact(url)!r}: the database driver {e.name!r} is not installed; "
                "for PostgreSQL: pip install 'hapi-dse[postgres]'"
            ) from None
        except Exception as e:  # sqlalchemy errors: bad URL, server down, no permission
            if attempt < SCHEMA_RACE_RETRIES and _schema_race(e):
                time.sleep(0.2 * (attempt + 1))
                continue
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"--storage {redact(url)!r}: cannot open ({redact(first)})") from None
    raise AssertionError("unreachable")


def _schema_race(e: Exception) -> bool:
    """Workers that open a fresh database together race to create Optuna's tables; the
    losers see a duplicate-key or already-exists error and only need to open it again."""
    text = str(e)
    return (
        type(e).__name__ == "IntegrityError"
        or "already exists" in text
        or ("duplicate key" in text)
    )


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


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
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
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


# State inherited by forked workers (set just before forking).
_FORK_STATE: dict[str, Any] = {}


def _worker(index: int, share: int) -> None:
    s = _FORK_STATE
    problem, cfg = s["problem"], s["cfg"]
    _quiet_optuna()
    import optuna

    storage = open_storage(s["url"])
    sampler = problem.sampler(cfg.sampler, cfg.seed + 1000 * (index + 1), s["population"])
    study = optuna.load_study(study_name=s["study"], storage=storage, sampler=sampler)
    study_id = storage.get_study_id_from_name(s["study"])
    from optuna.trial import TrialState

    def counter() -> int:
        return int(storage.get_n_trials(study_id, state=(TrialState.COMPLETE,)))

    problem.after_trial = _stop_at(cfg.trials, counter)
    study.optimize(problem.objective, n_trials=share, timeout=cfg.timeout, gc_after_trial=False)


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
    tmpdir: Path | None = None
    if cfg.jobs > 1 and url is None:
        tmpdir = Path(tempfile.mkdtemp(prefix=".hapi-journal-", dir=_scratch(cfg)))
        url = f"journal:{tmpdir / 'study.log'}"
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
                    study.optimize(
                        problem.objective,
                        n_trials=missing,
                        timeout=cfg.timeout,
                        gc_after_trial=False,
                    )
                finally:
                    problem.after_trial = None
        elif missing:
            _run_workers(problem, cfg, url, study_name, missing, population, before)
            storage = open_storage(url)
            study = open_study(problem, storage, study_name, sampler)
        search_s = time.perf_counter() - t0
        # the trials as a plain list, so that a temporary journal can go
        trials = study.get_trials(deepcopy=False)
        new = own[0] if cfg.jobs == 1 else _complete(study) - before
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
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
) -> None:
    from hapi_dse.progress import Progress

    jobs = min(cfg.jobs, missing)
    shares = [missing // jobs + (i < missing % jobs) for i in range(jobs)]
    methods = multiprocessing.get_all_start_methods()
    if "fork" not in methods:  # pragma: no cover - Windows
        raise UsageError("--jobs needs the 'fork' start method (Linux or macOS); use --jobs 1")
    ctx = multiprocessing.get_context("fork")
    _FORK_STATE.update(problem=problem, cfg=cfg, url=url, study=study_name, population=population)
    procs = [
        ctx.Process(target=_worker, args=(i, share), daemon=True) for i, share in enumerate(shares)
    ]
    try:
        for p in procs:
            p.start()
        with Progress(missing, f"search {problem.device} ({jobs} workers)") as bar:
            storage = open_storage(url) if bar.on else None
            while any(p.is_alive() for p in procs):
                time.sleep(0.2)
                if storage is not None:  # a terminal is watching: poll the shared study
                    from optuna.trial import TrialState

                    sid = storage.get_study_id_from_name(study_name)
                    done = int(storage.get_n_trials(sid, state=(TrialState.COMPLETE,)))
                    bar.update(max(min(done - before, missing) - bar.n, 0))
        for p in procs:
            p.join()
    except BaseException:
        for p in procs:
            if p.is_alive():
                p.terminate()
        raise
    finally:
        _FORK_STATE.clear()
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
    if cfg.timeout is not None and cfg.timeout <= 0:
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
