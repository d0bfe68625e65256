"""``hapi search``: an Optuna study per device over a search space, scored by the cost model.

:func:`run_search` is the whole search of a :class:`~hapi_dse.search.config.SearchConfig`:
it loads the run, builds one :class:`~hapi_dse.search.problem.Problem` per device (all
before any search, so that bad input fails early), runs each device's study
(:func:`~hapi_dse.search.study.run_study`: in memory, on any Optuna storage, or as ``--jobs
N`` worker processes sharing a journal file), optionally measures the front
(:mod:`hapi_dse.search.verify`), and writes ``<out>/<device>/``
(:mod:`hapi_dse.search.outputs`).

Interrupts: Ctrl-C or SIGTERM lets the trial in flight finish (a second one cuts it short),
so a storage holds whole trials only (:mod:`hapi_dse.search.interrupts`); ``--jobs`` workers
never outlive the search process (:mod:`hapi_dse.search.workers`) nor does their scratch
journal (:mod:`hapi_dse.search.scratch`); a journal file survives killed writers and full
disks (:mod:`hapi_dse.search.storage`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hapi_dse.run import REGISTERED_ONLY, CodeTrust, RunDir, resolve_run
from hapi_dse.search.config import SearchConfig
from hapi_dse.search.problem import build_problem
from hapi_dse.search.study import run_study


def study_name_for(cfg: SearchConfig, device: str, model_id: str) -> str:
    """``--study`` (suffixed by the device when there are several), else one per model and
    device."""
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


def resumes(dest: Path, cfg: SearchConfig, study: str) -> bool:
    """Whether ``dest`` holds the result of the study this search resumes (same ``--storage``,
    as recorded, and study name): rerunning the same command replaces its own result without
    ``--overwrite`` (README "Resuming"). Only hapi's own unchanged result counts."""
    from hapi_dse.errors import HapiError
    from hapi_dse.ownership import owned_kind
    from hapi_dse.provenance import redact
    from hapi_dse.readers import read_json

    if cfg.storage is None or owned_kind(dest) != "search":
        return False
    try:
        doc = read_json(dest / "search.json")
    except HapiError:
        return False
    return (
        isinstance(doc, dict)
        and doc.get("storage") == redact(cfg.storage)  # as search/study.py records it
        and doc.get("study") == study
    )


def run_search(
    cfg: SearchConfig,
    echo: Callable[[str], None] | None = None,
    *,
    progress: bool = True,
    code: CodeTrust = REGISTERED_ONLY,
) -> list[Any]:
    """Search every device of ``cfg``; write ``<out>/<device>/``. Returns one
    :class:`~hapi_dse.search.outputs.DeviceResult` per device. ``progress``: progress bars
    on a terminal; ``code``: what code the run's model.json may run (``--verify`` exports
    it: :class:`~hapi_dse.run.CodeTrust`)."""
    from hapi_dse.outdirs import check_not_cwd, check_out_dir
    from hapi_dse.search.outputs import write_results
    from hapi_dse.search.records import collect

    cfg.check()
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
    check_not_cwd(out)  # '--out ..' would put OUT/DEVICE/ beside the current directory
    replace = {
        p.device: cfg.overwrite
        or resumes(out / p.device, cfg, study_name_for(cfg, p.device, p.model_id))
        for p in problems
    }
    for p in problems:  # before any search: a refused --out must not cost a search
        check_out_dir(out / p.device, "search", replace[p.device])
    results = []
    for problem in problems:
        t1 = time.perf_counter()
        name = study_name_for(cfg, problem.device, problem.model_id)
        study = run_study(problem, cfg, name, progress=progress)
        result = collect(problem, study, cfg)
        result.timings.update(load_s=load_s, search_s=study.search_s)
        if cfg.verify:
            from hapi_dse.search.verify import verify

            verify(result, run, cfg, out, progress=progress, code=code)
        write_results(result, out / problem.device, cfg, overwrite=replace[problem.device])
        result.timings["device_s"] = time.perf_counter() - t1
        results.append(result)
        if echo is not None:
            from hapi_dse.search.console import console_report

            echo(console_report(result))
    return results


__all__: Sequence[str] = ["default_out", "run_search", "study_name_for"]
