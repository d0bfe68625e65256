"""``hapi plot`` as a library call: search results in, one image and its ``.plot.json`` per
device out.

:func:`load_references` finds the reference points (plain backbone, single-exit subnets) of
each result's run and device table; :func:`plot_figures` computes every figure
(:func:`~hapi_dse.plotting.info.figure_infos`), draws it
(:func:`~hapi_dse.plotting.render.render`) and writes its summary
(:func:`~hapi_dse.plotting.summary.figure_summary`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hapi_dse.plotting.info import FigureInfo, Reference, ResultSet

log = logging.getLogger(__name__)

__all__ = ["Figure", "load_references", "plot_figures"]


@dataclass(frozen=True)
class Figure:
    """One image written (its ``.plot.json`` beside it) and what it shows."""

    path: Path
    info: FigureInfo

    def summary(self) -> str:
        """The console line of ``hapi plot`` for this figure."""
        info = self.info
        n_front = sum(len(s.front) for s in info.series)
        return (
            f"{self.path}: {info.device}, {len(info.series)} result(s), {n_front} Pareto "
            f"designs, {len(info.references)} reference points"
        )


def load_references(
    results: list[ResultSet], model: str | None, profiles: str | None, x: str, y: str
) -> dict[tuple[str, str], list[Reference]]:
    """Reference points per (device, model_id) of ``results``, predicted from the run
    (``model``, else the run each result's ``search.json`` records, else the bundled example)
    and the device's table; none, with a warning, where the run or the table is unavailable
    or the run is another model than the results'."""
    from hapi_dse.cost.costs import SegmentCosts
    from hapi_dse.errors import HapiError
    from hapi_dse.plotting.info import reference_points
    from hapi_dse.profiling.table import load_table
    from hapi_dse.run import run_for_result
    from hapi_dse.training_id import check_same_training

    out: dict[tuple[str, str], list[Reference]] = {}
    for r in results:
        key = (r.device, r.model_id)
        if key in out:
            continue
        try:
            run = run_for_result(model, {"model_id": r.model_id, **r.search})
            if r.model_id:  # results that name no model have nothing to check
                check_same_training("the results", r.model_id, run, fix="pass --model")
            stats = run.stats("val")
            table = load_table(r.device, run.model_id, profiles)
            out[key] = reference_points(stats, SegmentCosts.from_table(table, stats), x, y)
        except HapiError as e:
            log.warning("%s: no reference points (%s)", r.path, e)
            out[key] = []
    return out


def plot_figures(
    dirs: list[str | Path],
    out: Path,
    *,
    x: str = "latency",
    y: str = "accuracy",
    model: str | None = None,
    profiles: str | None = None,
    references: bool = True,
    title: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Iterator[Figure]:
    """Draw the search results in ``dirs``, one figure per device (``out``, or
    ``OUT-DEVICE.EXT`` for several devices), each with its ``.plot.json``; yield each figure
    once it is written. An existing image (or ``.plot.json``) hapi did not write is replaced
    only with ``overwrite``."""
    from hapi_dse.atomic import write_json
    from hapi_dse.outdirs import check_out_file
    from hapi_dse.plotting.info import figure_infos, find_results, metric_column
    from hapi_dse.plotting.render import output_paths, render
    from hapi_dse.plotting.summary import figure_summary
    from hapi_dse.provenance import sha256_file

    xc, yc = metric_column(x), metric_column(y)
    results = find_results(dirs)
    refs = load_references(results, model, profiles, xc, yc) if references else {}
    infos = figure_infos(results, xc, yc, refs)
    paths = output_paths(out, [i.device for i in infos])
    for path in paths:  # all of them before the first is drawn
        for dest in (path, path.with_suffix(".plot.json")):
            check_out_file(dest, inputs=[r.path for r in results], overwrite=overwrite)
    settings = {"x": xc, "y": yc, "references": references}
    for info, path in zip(infos, paths, strict=True):
        render(info, path, title=title)
        summary = figure_summary(info, results, seed=seed, settings=settings)
        # how 'hapi plot' knows the image as its own next time (hapi_dse.ownership)
        summary["image_sha256"] = sha256_file(path)
        write_json(path.with_suffix(".plot.json"), summary)
        yield Figure(path, info)
