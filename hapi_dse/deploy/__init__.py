"""Deployment: export a searched design to ONNX with its exits inside, and measure it.

torch, onnx and onnxruntime are imported inside the functions that need them.
"""

from hapi_dse.deploy.evaluate import (
    EvalConfig,
    evaluate_export,
    evaluate_exports,
    format_report,
    open_export,
)
from hapi_dse.deploy.export import FORMATS, ExportConfig, export_design, sidecar_for
from hapi_dse.deploy.inputs import DesignFile, load_design, load_samples

__all__ = [
    "FORMATS",
    "DesignFile",
    "EvalConfig",
    "ExportConfig",
    "evaluate_export",
    "evaluate_exports",
    "export_design",
    "format_report",
    "load_design",
    "load_samples",
    "open_export",
    "sidecar_for",
]
