"""ONNX helpers shared by profiling and deployment: neither stage reaches into the other.

- :mod:`~hapi_dse.onnx_tools.torch_export`: the only ``torch.onnx.export`` call in hapi
  (:func:`export_onnx`), checked against PyTorch within :data:`CHECK_ATOL`, at
  :data:`DEFAULT_OPSET` unless told otherwise.
- :mod:`~hapi_dse.onnx_tools.session`: the one recipe for an onnxruntime session
  (:func:`session_options`, :func:`open_session`).

Importing this package pulls in neither torch, onnx nor onnxruntime: they are imported by
the functions that need them.
"""

from hapi_dse.onnx_tools.session import check_provider, open_session, session_options
from hapi_dse.onnx_tools.torch_export import (
    CHECK_ATOL,
    DEFAULT_EXPORTER,
    DEFAULT_OPSET,
    EXPORTERS,
    ExportMismatchError,
    ExportReport,
    compare_with_torch,
    export_onnx,
)

__all__ = [
    "CHECK_ATOL",
    "DEFAULT_EXPORTER",
    "DEFAULT_OPSET",
    "EXPORTERS",
    "ExportMismatchError",
    "ExportReport",
    "check_provider",
    "compare_with_torch",
    "export_onnx",
    "open_session",
    "session_options",
]
