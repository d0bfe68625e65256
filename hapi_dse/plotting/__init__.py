"""Pareto plots of search results: compute what to draw (``info``), then draw it (``render``).

matplotlib is imported only when a figure is rendered.
"""

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
    "FigureInfo",
    "Reference",
    "ResultSet",
    "SLOLine",
    "Series",
    "figure_infos",
    "find_results",
    "metric_column",
    "output_paths",
    "reference_points",
    "render",
    "series_info",
    "slo_lines",
]
