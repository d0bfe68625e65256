"""Deployment: export a searched design to ONNX with its exits inside, and measure it.

- :mod:`~hapi_dse.deploy.export` (``hapi export``), over :mod:`~hapi_dse.deploy.checks`,
  :mod:`~hapi_dse.deploy.single` and :mod:`~hapi_dse.deploy.staged`; the graphs themselves
  are :mod:`~hapi_dse.graphs.graph`.
- :mod:`~hapi_dse.deploy.load`: what an export holds, and opening it.
- :mod:`~hapi_dse.deploy.evaluate` (``hapi eval``), over :mod:`~hapi_dse.deploy.measure`;
  its console text (and ``hapi export``'s) is :mod:`~hapi_dse.deploy.report`.

torch, onnx and onnxruntime are imported inside the functions that need them.
"""

from hapi_dse.deploy.evaluate import (
    EvalConfig,
    broken_slos,
    evaluate_export,
    evaluate_exports,
    evaluate_to_file,
)
from hapi_dse.deploy.export import FORMATS, ExportConfig, export_design, sidecar_for
from hapi_dse.deploy.inputs import DesignFile, load_design, load_samples
from hapi_dse.deploy.load import open_export
from hapi_dse.deploy.report import format_export, format_report

__all__ = [
    "FORMATS",
    "DesignFile",
    "EvalConfig",
    "ExportConfig",
    "broken_slos",
    "evaluate_export",
    "evaluate_exports",
    "evaluate_to_file",
    "export_design",
    "format_export",
    "format_report",
    "load_design",
    "load_samples",
    "open_export",
    "sidecar_for",
]
