"""Pareto plots of search results: compute what to draw (``info``), then draw it (``render``);
``figures`` does both for ``hapi plot``, with each figure's ``.plot.json`` (``summary``).

matplotlib is imported only when a figure is rendered.
"""

from hapi_dse.plotting.figures import Figure, load_references, plot_figures
from hapi_dse.plotting.info import (
    FigureInfo,
    Reference,
    ResultSet,
    Series,
    SLOLine,
    figure_infos,
    find_results,
    metric_column,
    reference_points,
    series_info,
    slo_lines,
)
from hapi_dse.plotting.render import output_paths, render

__all__ = [
    "Figure",
    "FigureInfo",
    "Reference",
    "ResultSet",
    "SLOLine",
    "Series",
    "figure_infos",
    "find_results",
    "load_references",
    "metric_column",
    "output_paths",
    "plot_figures",
    "reference_points",
    "render",
    "series_info",
    "slo_lines",
]
