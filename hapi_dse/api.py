"""hapi from Python: the library behind every ``hapi`` command, for notebooks and scripts.

Everything here takes and returns objects (exit statistics, segment costs, SLOs, designs,
and a documented dataclass from each step: :class:`TrainedRun`, a
:class:`~hapi_dse.profiling.modes.ProfiledTable`, a
:class:`~hapi_dse.search.records.DeviceResult`, :class:`ExportedDesign`,
:class:`Evaluation`) and writes nothing unless asked (``out=``; :func:`train` and
:func:`export` write what they make). The CLI commands are thin shells over the same code,
so a search run here with a given seed finds the same trials as ``hapi search`` does.
Progress bars (``progress=``, on a terminal only) and what a run's own model code may do
(``trust_code=``, ``backbone=``) are arguments of each call.

The package exposes these names too (``import hapi_dse as hapi``), imported on first use.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hapi_dse import __all__ as _PACKAGE_NAMES
from hapi_dse.cost import (
    SLO,
    Design,
    Objective,
    SegmentCosts,
    parse_objectives,
    parse_slo,
)
from hapi_dse.cost import (
    predict as predict,  # re-exported: hapi.predict
)
from hapi_dse.deploy.evaluate import EvalConfig
from hapi_dse.deploy.export import ExportConfig
from hapi_dse.profiling.modes import ProfileConfig
from hapi_dse.search.config import SearchConfig
from hapi_dse.training.config import Distill, TrainConfig

if TYPE_CHECKING:
    from hapi_dse.exit_stats import ExitStats
    from hapi_dse.plotting import FigureInfo
    from hapi_dse.profiling.modes import ProfiledTable
    from hapi_dse.run import RunDir
    from hapi_dse.search.records import DeviceResult
    from hapi_dse.search.space import SearchSpace


@dataclass(frozen=True)
class TrainedRun:
    """What :func:`train` wrote and measured.

    ``run``: the run directory written (:class:`~hapi_dse.run.RunDir`: ``.path``,
    ``.stats("val")``, ``.load_model()``), what every later step takes. ``model_id``: the
    training's identity (architecture and weights), which profile tables, designs and
    exports record. ``backbone_val_acc`` and ``backbone_test_acc``: the final exit's
    accuracy on val and test. ``per_exit``: one row per exit column (``position``,
    ``head``, ``temperature``, ``val_acc``, ``test_acc``, ``val_nll_before``,
    ``val_nll_after``), the final classifier last. ``timings``: seconds per step
    (``backbone_s``, ``exits_s``, ``statistics_s``, ``total_s``). ``train_json``: all that
    ``train.json`` holds (provenance, settings, histories, accelerator)."""

    run: RunDir
    model_id: str
    backbone_val_acc: float
    backbone_test_acc: float
    per_exit: list[dict[str, Any]]
    timings: dict[str, float]
    train_json: dict[str, Any]


@dataclass(frozen=True)
class ExportedDesign:
    """What :func:`export` wrote: the model and its sidecar.

    ``path``: the ``.onnx`` file, or the directory of a ``staged`` export. ``sidecar``: the
    JSON file that describes it (``MODEL.export.json``, or ``export.json`` in the
    directory). ``format``: ``onnx`` or ``staged``. ``model_id``: the run it was exported
    from. ``design``: the design exported. ``device``: the device it was searched for
    (``None`` if the design file names none). ``slos``: the SLOs it was searched under, as
    ``design.json`` records them (``metric``, ``bound``, ``value``, ``text``; ``hapi eval``
    gives each a verdict). ``exits``: one row per exit (``index``,
    ``position``, ``head``, ``threshold``, ``temperature``), the final classifier last.
    ``opset``: the ONNX opset. ``max_abs_diff``: the largest difference of each output,
    onnxruntime against PyTorch, on real samples that take every exit path (the check
    passed, or nothing was written). ``info``: all that the sidecar holds."""

    path: Path
    sidecar: Path
    format: str
    model_id: str
    design: Design
    device: str | None
    slos: list[dict[str, Any]]
    exits: list[dict[str, Any]]
    opset: int
    max_abs_diff: dict[str, float]
    info: dict[str, Any]


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` measured, beside the cost model's prediction.

    ``model``: the export evaluated. ``path``: where the JSON report was written (``None``
    when not asked to). ``dataset``, ``split`` and ``n``: the samples it ran on.
    ``accuracy``: measured. ``latency_ms``: measured latency statistics (``mean``,
    ``p50``, ``p90``, ``p99``, ``max``). ``exit_histogram``: samples per exit, the final
    classifier last. ``predicted_accuracy`` and ``predicted_latency_ms``: the cost model's
    figures for the same samples with the device's table (``None`` when there is no table
    to predict from). ``relative_error``: (measured - predicted) / predicted, for
    ``accuracy`` and ``latency_mean``, ``latency_p50``... ``exit_agreement``: the share of
    samples whose exit the cost model predicted (``None`` without a prediction).
    ``slos``: per SLO the design was searched under, its measured and predicted value and
    ``verdict`` (``met``, ``broken``, ``not measured``). ``broken``: the SLOs broken as
    measured. ``machine_busy``: whether other load on this machine may have slowed the
    timing. ``report``: all that the JSON report holds."""

    model: Path
    path: Path | None
    dataset: str
    split: str
    n: int
    accuracy: float
    latency_ms: dict[str, float]
    exit_histogram: list[int]
    predicted_accuracy: float | None
    predicted_latency_ms: dict[str, float] | None
    relative_error: dict[str, float | None]
    exit_agreement: float | None
    slos: list[dict[str, Any]]
    broken: list[str]
    machine_busy: bool
    report: dict[str, Any]


def train(
    out: str | Path,
    dataset: str = TrainConfig.dataset,
    *,
    data_dir: str | Path | None = None,
    backbone: str = TrainConfig.backbone,
    backbone_kwargs: Mapping[str, Any] | None = None,
    heads: Sequence[str] | str = TrainConfig.heads,
    epochs: int = TrainConfig.epochs,
    exit_epochs: int = TrainConfig.exit_epochs,
    batch_size: int = TrainConfig.batch_size,
    lr: float = TrainConfig.lr,
    exit_lr: float = TrainConfig.exit_lr,
    weight_decay: float = TrainConfig.weight_decay,
    distill: Distill | str | None = None,
    init: str | Path | None = None,
    augment: bool = True,
    limit: int | None = None,
    image_size: str | int | None = None,
    channels: int | None = None,
    accelerator: str = TrainConfig.accelerator,
    amp: bool | None = None,
    threads: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainedRun:
    """Train an overprovisioned early-exit network as ``hapi train`` does and write its run
    directory ``out`` (swapped in whole when done; ``overwrite`` replaces an earlier run
    there, nothing else).

    The settings are the command's options (``--no-augment`` is ``augment=False``;
    ``heads`` a sequence or the option's comma-separated text; ``distill`` a
    :class:`~hapi_dse.training.config.Distill` or ``"T:ALPHA"``; ``backbone`` a registered
    name or ``package.module:factory``, built with ``backbone_kwargs``). ``progress``:
    progress bars on a terminal. Needs torch (``pip install 'hapi-dse[train]'``)."""
    from hapi_dse.readers import read_json
    from hapi_dse.run import RunDir
    from hapi_dse.training.trainer import train as run_training

    cfg = TrainConfig(
        out=Path(out),
        dataset=dataset,
        data_dir=None if data_dir is None else str(data_dir),
        backbone=backbone,
        backbone_kwargs=dict(backbone_kwargs or {}),
        heads=tuple(t.strip() for t in heads.split(",") if t.strip())
        if isinstance(heads, str)
        else tuple(heads),
        epochs=epochs,
        exit_epochs=exit_epochs,
        batch_size=batch_size,
        lr=lr,
        exit_lr=exit_lr,
        weight_decay=weight_decay,
        distill=Distill.parse(distill) if isinstance(distill, str) else distill,
        init=None if init is None else Path(init),
        augment=augment,
        seed=seed,
        threads=threads,
        limit=limit,
        image_size=None if image_size is None else str(image_size),
        channels=channels,
        accelerator=accelerator,
        amp=amp,
        overwrite=overwrite,
    )
    run_training(cfg, progress=progress)
    doc = read_json(cfg.out / "train.json")  # as written: JSON lists, not the tuples
    return TrainedRun(
        run=RunDir(cfg.out),
        model_id=doc["model_id"],
        backbone_val_acc=doc["backbone_val_acc"],
        backbone_test_acc=doc["backbone_test_acc"],
        per_exit=doc["per_exit"],
        timings=doc["timings"],
        train_json=doc,
    )


def _run_dir(run: RunDir | str | Path | None) -> str | None:
    """A run as the configs take it: its directory's path (``None``: their default)."""
    return None if run is None else str(run.path if hasattr(run, "path") else run)


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
    device: str = ProfileConfig.device,
    *,
    modelled: bool = False,
    spec: str | Path | None = None,
    profiles: str | Path | None = None,
    out: str | Path | None = None,
    onnx_dir: str | Path | None = None,
    runs: int = ProfileConfig.runs,
    threads: int = ProfileConfig.threads,
    exporter: str = ProfileConfig.exporter,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    trust_code: bool = False,
    backbone: str | None = None,
) -> ProfiledTable:
    """Build ``device``'s profile table for ``run`` (default: the bundled example), as
    ``hapi profile`` does: measured on this machine with onnxruntime, or with
    ``modelled=True`` modelled from a device spec (``spec``, default the spec named
    ``device`` on the profile search path: ``profiles``, ``$HAPI_PROFILES``, ``./profiles``,
    the shipped specs) and labelled as modelled. The segments are exported first, unless
    ``onnx_dir`` holds them ('hapi profile --export-only'). ``progress``: progress bars on a
    terminal; ``trust_code`` and ``backbone``: what code the run's model.json may run, as
    ``--trust-run-code`` and ``--backbone MODULE:FACTORY`` allow it (a run directory is
    data: by default only registered backbones are built from it).

    Returns the table (``.result.rows``, ``.result.sidecar``, ``.summary()``) and writes
    nothing unless asked: ``out=DIR`` writes ``DIR/DEVICE/MODEL_ID.csv`` and its sidecar, as
    ``hapi profile --profiles DIR`` does (``.path``; ``load_costs(..., profiles=DIR)`` reads
    it); without ``out`` the table is built in a temporary directory, removed before this
    returns, and ``.path`` is ``None``."""
    import dataclasses

    from hapi_dse.profiling.modes import ProfileMode
    from hapi_dse.profiling.runner import profile_table
    from hapi_dse.profiling.specs import spec_paths
    from hapi_dse.run import CodeTrust
    from hapi_dse.tempdirs import temp_dir

    model = _run_dir(run)
    code = CodeTrust(trust=trust_code, backbone=backbone)
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
        return profile_table(cfg, progress=progress, code=code)

    if out is not None:
        return build(Path(out))
    with temp_dir("hapi-api-profile-") as tmp:
        return dataclasses.replace(build(tmp / "profiles"), path=None)


def search(
    stats: ExitStats,
    costs: SegmentCosts,
    space: SearchSpace | str | Path = SearchConfig.space,
    *,
    test: ExitStats | None = None,
    slos: Sequence[SLO | str] = (),
    objectives: Sequence[Objective | str] | str | None = None,
    trials: int = SearchConfig.trials,
    sampler: str = SearchConfig.sampler,
    seed: int = 0,
    population: int | None = None,
    pick: str | None = None,
    timeout: float | None = None,
    device: str = "device",
    model_id: str = "",
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
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
    search`` does. ``progress``: a progress bar on a terminal.
    """
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
    run = run_study(problem, cfg, f"hapi-{model_id or 'api'}-{device}", progress=progress)
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
    fmt: str = ExportConfig.fmt,
    trial: int | None = None,
    opset: int = ExportConfig.opset,
    layout_anchor: bool = ExportConfig.layout_anchor,
    check_samples: int = ExportConfig.check_samples,
    data_dir: str | Path | None = None,
    seed: int = 0,
    overwrite: bool = False,
    trust_code: bool = False,
    backbone: str | None = None,
) -> ExportedDesign:
    """Export a searched design as ``hapi export`` does: ``source`` is a search result
    directory (``search(..., out=DIR)`` or ``hapi search``) or a ``design.json``; ``trial``
    picks another trial of that search than the chosen one. Writes ``out`` (a ``.onnx`` file,
    or a directory for ``fmt="staged"``) and its sidecar, checked against the PyTorch model
    (``run``: default the run the search recorded, else the bundled example; its model id
    must match); returns what was written. ``opset``, ``layout_anchor``, ``check_samples``
    and ``data_dir`` are the command's options of those names; ``trust_code`` and
    ``backbone``: as for :func:`profile`."""
    from hapi_dse.deploy.export import export_design, sidecar_for
    from hapi_dse.run import CodeTrust

    model = _run_dir(run)
    cfg = ExportConfig(
        source=Path(source),
        out=Path(out),
        model=model,
        fmt=fmt,
        opset=opset,
        layout_anchor=layout_anchor,
        data_dir=None if data_dir is None else str(data_dir),
        check_samples=check_samples,
        seed=seed,
        trial=trial,
        overwrite=overwrite,
    )
    info = export_design(cfg, code=CodeTrust(trust=trust_code, backbone=backbone))
    return ExportedDesign(
        path=cfg.out,
        sidecar=sidecar_for(cfg.out, fmt),
        format=info["format"],
        model_id=info["model_id"],
        design=Design.from_dict(info["design"]),
        device=info.get("device"),
        slos=info["slos"],
        exits=info["exits"],
        opset=info["opset"],
        max_abs_diff=info["check"]["max_abs_diff"],
        info=info,
    )


def evaluate(
    model: str | Path,
    *,
    run: RunDir | str | Path | None = None,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    split: str = EvalConfig.split,
    device: str = EvalConfig.device,
    profiles: str | Path | None = None,
    threads: int = EvalConfig.threads,
    limit: int | None = None,
    warmup: int = EvalConfig.warmup,
    passes: int = EvalConfig.passes,
    seed: int = 0,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Evaluation:
    """Run an export (``.onnx`` file or staged directory, from :func:`export` or ``hapi
    export``) with onnxruntime on a split, as ``hapi eval`` does: accuracy, exit histogram
    and latency measured on this machine, each beside the cost model's prediction with
    ``device``'s profile table (default ``host``: a table measured here, ``hapi profile
    --device host``), and a verdict for each SLO the design was searched under.

    ``run``: default the run the export records, else the bundled example; ``dataset``:
    default the one the model was trained on. ``passes`` timed passes over the samples
    after ``warmup`` untimed calls. Writes nothing unless asked: ``out=FILE`` also writes
    the JSON report there (as ``hapi eval --out FILE``; ``.path``). ``progress``: a
    progress bar on a terminal."""
    from hapi_dse.deploy.evaluate import broken_slos, evaluate_export, evaluate_to_file

    cfg = EvalConfig(
        model=Path(model),
        run=_run_dir(run),
        dataset=dataset,
        split=split,
        data_dir=None if data_dir is None else str(data_dir),
        device=device,
        profiles=None if profiles is None else str(profiles),
        threads=threads,
        limit=limit,
        warmup=warmup,
        passes=passes,
        seed=seed,
        overwrite=overwrite,
    )
    path: Path | None = None
    if out is None:
        rep = evaluate_export(cfg, progress=progress)
    else:
        rep, path = evaluate_to_file(cfg, Path(out), progress=progress)
    measured, predicted = rep["measured"], rep["predicted"]
    return Evaluation(
        model=cfg.model,
        path=path,
        dataset=rep["dataset"],
        split=rep["split"],
        n=rep["n"],
        accuracy=measured["accuracy"],
        latency_ms=measured["latency_ms"],
        exit_histogram=measured["exit_histogram"],
        predicted_accuracy=None if predicted is None else predicted["accuracy"],
        predicted_latency_ms=None if predicted is None else predicted["latency_ms"],
        relative_error=rep["relative_error"],
        exit_agreement=None if rep["fidelity"] is None else rep["fidelity"]["exit_agreement"],
        slos=rep["slos"],
        broken=broken_slos(rep),
        machine_busy=rep["machine_busy"],
        report=rep,
    )


def plot_info(
    results: Sequence[str | Path], x: str = "latency", y: str = "accuracy"
) -> list[FigureInfo]:
    """What ``hapi plot`` would draw for these search result directories, one
    :class:`~hapi_dse.plotting.FigureInfo` per device (front, dominated and infeasible
    trials, SLO lines), without matplotlib."""
    from hapi_dse.plotting import figure_infos, find_results, metric_column

    return figure_infos(find_results(list(results)), metric_column(x), metric_column(y))


#: the package's API names (``hapi_dse.__all__``, where they are listed once) but its version
__all__ = [name for name in _PACKAGE_NAMES if name != "__version__"]
