"""hapi from Python: the library behind every ``hapi`` command, for notebooks and scripts.

Everything here takes and returns objects (exit statistics, segment costs, SLOs, designs) and
writes nothing unless asked (``out=``). The CLI commands are thin shells over the same code,
so a search run here with a given seed finds the same trials as ``hapi search`` does.

>>> import hapi_dse.api as hapi
>>> run = hapi.load_run()  # the bundled example (a run directory of 'hapi train')
>>> val, test = run.stats("val"), run.stats("test")
>>> costs = hapi.load_costs("pixel6", run, val)
>>> result = hapi.search(
...     val, costs, test=test, slos=["latency=0.2ms"], trials=200, seed=0, device="pixel6"
... )
>>> result.chosen.metrics["latency_ms"] <= 0.2
True
>>> len(result.front) > 1 and all(r.feasible for r in result.front)
True

Scoring one design by hand:

>>> design = result.chosen.design
>>> hapi.predict(design, val, costs)["latency_ms"] == result.chosen.metrics["latency_ms"]
True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hapi_dse.cost import (
    SLO,
    Design,
    Objective,
    SegmentCosts,
    parse_objectives,
    parse_slo,
    predict,
)

if TYPE_CHECKING:
    from hapi_dse.exit_stats import ExitStats
    from hapi_dse.plotting import FigureInfo
    from hapi_dse.profiling.modes import ProfiledTable
    from hapi_dse.run import RunDir
    from hapi_dse.search.records import DeviceResult
    from hapi_dse.search.space import SearchSpace


def load_run(path: str | Path | None = None) -> RunDir:
    """A run directory written by ``hapi train`` (``None``: the bundled example)."""
    from hapi_dse.run import resolve_run

    return resolve_run(None if path is None else str(path))


def load_costs(
    device: str,
    run: RunDir,
    stats: ExitStats | None = None,
    profiles: str | Path | None = None,
) -> SegmentCosts:
    """The device's profile table for ``run``, aligned with the exit columns of ``stats``
    (default: the run's val split). Raises when there is no table for the device and run."""
    from hapi_dse.profiling.table import load_table

    table = load_table(device, run.model_id, profiles)
    return SegmentCosts.from_table(table, stats if stats is not None else run.stats("val"))


def profile(
    run: RunDir | str | Path | None = None,
    device: str = "host",
    *,
    modelled: bool = False,
    spec: str | Path | None = None,
    profiles: str | Path | None = None,
    out: str | Path | None = None,
    onnx_dir: str | Path | None = None,
    runs: int = 200,
    threads: int = 1,
    exporter: str = "dynamo",
    seed: int = 0,
    force: bool = False,
) -> ProfiledTable:
    """Build ``device``'s profile table for ``run`` (default: the bundled example), as
    ``hapi profile`` does: measured on this machine with onnxruntime, or with
    ``modelled=True`` modelled from a device spec (``spec``, default the spec named
    ``device`` on the profile search path: ``profiles``, ``$HAPI_PROFILES``, ``./profiles``,
    the shipped specs) and labelled as modelled. The segments are exported first, unless
    ``onnx_dir`` holds them ('hapi profile --export-only').

    Returns the table (``.result.rows``, ``.result.sidecar``, ``.summary()``) and writes
    nothing unless asked: ``out=DIR`` writes ``DIR/DEVICE/MODEL_ID.csv`` and its sidecar, as
    ``hapi profile --profiles DIR`` does (``.path``; ``load_costs(..., profiles=DIR)`` reads
    it); without ``out`` the table is built in a temporary directory, removed before this
    returns, and ``.path`` is ``None``."""
    import dataclasses

    from hapi_dse.profiling.modes import ProfileConfig, ProfileMode
    from hapi_dse.profiling.runner import profile_table
    from hapi_dse.profiling.specs import spec_paths
    from hapi_dse.tempdirs import temp_dir

    model = None if run is None else str(run.path if hasattr(run, "path") else run)
    if spec is None and profiles is not None:  # looked up where asked, whatever is written
        spec = spec_paths(profiles).get(device)

    def build(dest: Path) -> ProfiledTable:
        cfg = ProfileConfig(
            device=device,
            mode=ProfileMode.MODELLED if modelled else ProfileMode.MEASURE,
            model=None if onnx_dir is not None else model,
            profiles=str(dest),
            onnx_dir=None if onnx_dir is None else str(onnx_dir),
            spec=None if spec is None else str(spec),
            runs=runs,
            threads=threads,
            exporter=exporter,
            seed=seed,
            force=force,
        )
        return profile_table(cfg)

    if out is not None:
        return build(Path(out))
    with temp_dir("hapi-api-profile-") as tmp:
        return dataclasses.replace(build(tmp / "profiles"), path=None)


def search(
    stats: ExitStats,
    costs: SegmentCosts,
    space: SearchSpace | str | Path = "default",
    *,
    test: ExitStats | None = None,
    slos: Sequence[SLO | str] = (),
    objectives: Sequence[Objective | str] | str | None = None,
    trials: int = 1000,
    sampler: str = "nsga2",
    seed: int = 0,
    population: int | None = None,
    pick: str | None = None,
    timeout: float | None = None,
    device: str = "device",
    model_id: str = "",
    out: str | Path | None = None,
    overwrite: bool = False,
) -> DeviceResult:
    """Search early-exit designs for one device; return every trial, the feasible Pareto
    front and the chosen design.

    ``stats`` are the exit statistics the search scores designs on (val), ``costs`` the
    device's segment costs aligned with them; the front is scored again on ``test`` (default:
    ``stats``). SLOs and objectives are objects or their command-line text
    (``"latency=50ms"``, ``"accuracy,latency"``); a relative SLO (``"latency=0.6x"``) is
    that factor times the plain backbone's predicted value with ``costs``. ``space`` a
    :class:`SearchSpace`, a shipped space's name or a space file. ``out``: also write
    ``trials.csv``, ``pareto.csv``, ``design.json`` and ``search.json`` there, as ``hapi
    search`` does.
    """
    from hapi_dse.search.config import SearchConfig
    from hapi_dse.search.outputs import write_results
    from hapi_dse.search.picking import check_pick
    from hapi_dse.search.problem import make_problem
    from hapi_dse.search.records import collect
    from hapi_dse.search.space import SearchSpace, load_space
    from hapi_dse.search.study import run_study

    slo_objs = tuple(parse_slo(s) if isinstance(s, str) else s for s in slos)
    objs: tuple[Objective, ...] | None
    if objectives is None:
        objs = None
    elif isinstance(objectives, str):
        objs = tuple(parse_objectives(objectives))
    else:
        objs = tuple(o if isinstance(o, Objective) else parse_objectives(o)[0] for o in objectives)
    cfg = SearchConfig(
        devices=(device,),
        space=space.name if isinstance(space, SearchSpace) else str(space),
        slos=slo_objs,
        objectives=objs,
        sampler=sampler,
        trials=trials,
        timeout=timeout,
        seed=seed,
        pick=pick,
        population=population,
        out=Path(out) if out is not None else None,
        overwrite=overwrite,
    )
    cfg.check()
    check_pick(pick)
    if out is not None:  # before the search: a refused out must not cost one
        from hapi_dse.outdirs import check_out_dir

        check_out_dir(Path(out), "search", overwrite)
    problem = make_problem(
        stats,
        costs,
        space if isinstance(space, SearchSpace) else load_space(space),
        test=test,
        objectives=objs,
        slos=slo_objs,
        device=device,
        model_id=model_id,
    )
    run = run_study(problem, cfg, f"hapi-{model_id or 'api'}-{device}")
    result = collect(problem, run, cfg)
    result.timings["search_s"] = run.search_s
    if out is not None:
        write_results(result, Path(out), cfg)
    return result


def export(
    source: str | Path,
    out: str | Path,
    *,
    run: RunDir | str | Path | None = None,
    fmt: str = "onnx",
    trial: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a searched design as ``hapi export`` does: ``source`` is a search result
    directory (``search(..., out=DIR)`` or ``hapi search``) or a ``design.json``; ``trial``
    picks another trial of that search than the chosen one. Writes ``out`` (a ``.onnx`` file,
    or a directory for ``fmt="staged"``) and its sidecar, checked against the PyTorch model
    (``run``: default the run the search recorded, else the bundled example; its model id
    must match); returns what the sidecar holds."""
    from hapi_dse.deploy.export import ExportConfig, export_design

    model = str(run.path if hasattr(run, "path") else run) if run is not None else None
    cfg = ExportConfig(
        source=Path(source),
        out=Path(out),
        model=model,
        fmt=fmt,
        trial=trial,
        seed=seed,
        overwrite=overwrite,
    )
    return export_design(cfg)


def plot_info(
    results: Sequence[str | Path], x: str = "latency", y: str = "accuracy"
) -> list[FigureInfo]:
    """What ``hapi plot`` would draw for these search result directories, one
    :class:`~hapi_dse.plotting.FigureInfo` per device (front, dominated and infeasible
    trials, SLO lines), without matplotlib."""
    from hapi_dse.plotting import figure_infos, find_results, metric_column

    return figure_infos(find_results(list(results)), metric_column(x), metric_column(y))


__all__ = [
    "Design",
    "export",
    "load_costs",
    "load_run",
    "plot_info",
    "predict",
    "profile",
    "search",
]
