"""``hapi plot``: Pareto plots of one or more search results (a thin shell)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from hapi_dse.cli import options

log = logging.getLogger(__name__)


@click.command("plot")
@click.argument("dirs", nargs=-1, required=True, metavar="DIR...", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Image file: .png, .svg or .pdf (one per device: FILE-DEVICE.EXT when the "
    "results cover several devices).",
)
@click.option(
    "--x",
    "x",
    default="latency",
    show_default=True,
    help="Metric on the x axis (latency, p99_latency, energy, size, accuracy...).",
)
@click.option("--y", "y", default="accuracy", show_default=True, help="Metric on the y axis.")
@options.model
@options.profiles
@click.option(
    "--references/--no-references",
    default=True,
    show_default=True,
    help="Plain backbone and single-exit subnets as reference points (needs the "
    "run and the device's profile table).",
)
@click.option("--title", default=None, help="Figure title.")
@options.seed
def plot(
    dirs: tuple[Path, ...],
    out: Path,
    x: str,
    y: str,
    model: str | None,
    profiles: str | None,
    references: bool,
    title: str | None,
    seed: int,
) -> None:
    """Plot accuracy vs latency (or any two metrics) of search results: every trial, the
    Pareto front, infeasible trials in grey, SLO lines and reference points."""
    from hapi_dse.atomic import write_json
    from hapi_dse.plotting import figure_infos, find_results, metric_column, output_paths, render
    from hapi_dse.plotting.summary import figure_summary

    xc, yc = metric_column(x), metric_column(y)
    results = find_results(list(dirs))
    refs = _references(results, model, profiles, xc, yc) if references else {}
    infos = figure_infos(results, xc, yc, refs)
    paths = output_paths(out, [i.device for i in infos])
    for info, path in zip(infos, paths, strict=True):
        render(info, path, title=title)
        settings = {"x": xc, "y": yc, "references": references}
        summary = figure_summary(info, results, seed=seed, settings=settings)
        write_json(path.with_suffix(".plot.json"), summary)
        n_front = sum(len(s.front) for s in info.series)
        click.echo(
            f"{path}: {info.device}, {len(info.series)} result(s), {n_front} Pareto "
            f"designs, {len(info.references)} reference points"
        )


def _references(
    results: list[Any], model: str | None, profiles: str | None, x: str, y: str
) -> dict[tuple[str, str], list[Any]]:
    """Reference points per (device, model_id); skipped with a warning when unavailable."""
    from hapi_dse.cost.costs import SegmentCosts
    from hapi_dse.errors import HapiError
    from hapi_dse.plotting import reference_points
    from hapi_dse.profiling.table import load_table
    from hapi_dse.run import resolve_run

    out: dict[tuple[str, str], list[Any]] = {}
    for r in results:
        key = (r.device, r.model_id)
        if key in out:
            continue
        try:
            run = resolve_run(model)
            if r.model_id and run.model_id != r.model_id:
                raise HapiError(
                    f"the run {run.path} is {run.model_id}, the results are for "
                    f"{r.model_id}; pass --model"
                )
            stats = run.stats("val")
            table = load_table(r.device, run.model_id, profiles)
            out[key] = reference_points(stats, SegmentCosts.from_table(table, stats), x, y)
        except HapiError as e:
            log.warning("%s: no reference points (%s)", r.path, e)
            out[key] = []
    return out
