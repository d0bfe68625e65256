"""Device profiles: per-segment latency/energy tables, measured or modelled (DESIGN 2.2).

- :mod:`hapi_dse.onnx_tools`: the only ``torch.onnx.export`` call in hapi (shared with deploy).
- :mod:`~hapi_dse.profiling.segments`: blocks, heads and the final classifier as ONNX files;
  :mod:`~hapi_dse.profiling.manifest` describes them for a board (standard library only).
- Profilers (one interface, :class:`Profiler`): :class:`OrtProfiler` (onnxruntime here),
  :class:`ModelledProfiler` (roofline from ``profiles/specs/DEVICE.toml``),
  :class:`FakeProfiler` (deterministic, for tests).
- ``hapi profile`` as a call: :func:`run_profile` (:mod:`~hapi_dse.profiling.runner`) takes a
  :class:`ProfileConfig` whose :class:`ProfileMode` says what to do, and returns that mode's
  result type (:mod:`~hapi_dse.profiling.modes`).
- :mod:`~hapi_dse.profiling.table`: atomic writing and validated loading of a table; its
  format and checks are :mod:`~hapi_dse.profiling.table_format`, plain names and paths
  :mod:`~hapi_dse.profiling.names`, finding devices and tables
  :mod:`~hapi_dse.profiling.devices`; installing a board's tables (``hapi import-profile``)
  :mod:`~hapi_dse.profiling.importing`.

Names are imported on first use, so ``import hapi_dse.profiling`` pulls in neither torch nor
onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TABLE_COLUMNS": "table",
    "ProfileTable": "table",
    "load_table": "table",
    "write_table": "table",
    "read_table": "table",
    "check_table": "table",
    "import_tables": "importing",
    "ImportedTable": "importing",
    "list_tables": "devices",
    "Segment": "manifest",
    "Manifest": "manifest",
    "export_segments": "segments",
    "load_manifest": "manifest",
    "Profiler": "base",
    "ProfileResult": "base",
    "OrtProfiler": "measured",
    "ModelledProfiler": "modelled",
    "FakeProfiler": "fake",
    "DeviceSpec": "specs",
    "find_spec": "specs",
    "parse_spec": "specs",
    "TimingSettings": "timing",
    "ProfileConfig": "modes",
    "ProfileMode": "modes",
    "ProfiledTable": "modes",
    "ExportedSegments": "modes",
    "CalibratedSpec": "modes",
    "run_profile": "runner",
    "profile_table": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        mod = importlib.import_module(f"hapi_dse.profiling.{_EXPORTS[name]}")
        value = getattr(mod, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hapi_dse.profiling' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
