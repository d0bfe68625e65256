"""``hapi plot``: Pareto plots of one or more search results (a thin shell)."""

from __future__ import annotations

from pathlib import Path

import click

from hapi_dse.cli import options


@click.command("plot")
@options.verbosity
@click.argument("dirs", nargs=-1, required=True, metavar="DIR...", type=click.Path(path_type=Path))
@options.out(
    "Image file: .png, .svg or .pdf (one per device: FILE-DEVICE.EXT when the "
    "results cover several devices).",
    kind="file",
    required=True,
)
@click.option(
    "--x",
    "x",
    default="latency",
    show_default=True,
    help=f"Metric on the x axis ({options.metric_names()}).",
)
@click.option("--y", "y", default="accuracy", show_default=True, help="Metric on the y axis.")
@options.model()
@options.profiles
@click.option(
    "--references/--no-references",
    default=True,
    show_default=True,
    help="Plain backbone and single-exit subnets as reference points (needs the "
    "run and the device's profile table).",
)
@click.option("--title", default=None, help="Figure title.")
@options.overwrite("an image (or its .plot.json) that hapi did not write")
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
    overwrite: bool,
    seed: int,
) -> None:
    """Plot accuracy vs latency (or any two metrics) of search results: every trial, the
    Pareto front, infeasible trials in grey, SLO lines and reference points."""
    from hapi_dse.plotting.figures import plot_figures

    figures = plot_figures(
        list(dirs),
        out,
        x=x,
        y=y,
        model=model,
        profiles=profiles,
        references=references,
        title=title,
        seed=seed,
        overwrite=overwrite,
    )
    for figure in figures:
        options.report(figure.summary())
