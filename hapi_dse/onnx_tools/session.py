"""The one recipe for an onnxruntime session in hapi (needs onnxruntime only when called).

Profiling (:mod:`hapi_dse.profiling.timing`), ``hapi eval``, the export checks and the
comparison with PyTorch all open graphs here, so a graph is timed and checked under the
settings it is deployed with: ``threads`` intra-op threads, one inter-op thread, sequential
execution, the graph optimisation level by name (``ORT_ENABLE_ALL`` by default, onnxruntime's
own default) and warnings silenced (severity 3: errors only).

The staged runtime shipped inside an export (:mod:`hapi_dse.deploy.staged_runtime`) keeps
its own copy of :func:`session_options`: it must run with numpy and onnxruntime alone. A
test holds the two to the same settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hapi_dse.errors import ArtefactError, SettingError, first_line

#: onnxruntime log severity: 3 = errors only (its warnings about unused initializers and
#: the like would otherwise reach the console)
LOG_SEVERITY = 3
DEFAULT_PROVIDER = "CPUExecutionProvider"


def session_options(threads: int = 1, optimization: str = "all") -> Any:
    """``onnxruntime.SessionOptions`` with hapi's settings (see the module docstring);
    ``optimization`` is ``basic``, ``extended`` or ``all``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    opts.log_severity_level = LOG_SEVERITY
    return opts


def check_provider(provider: str) -> None:
    """Refuse an execution provider this onnxruntime does not have, listing those it has."""
    import onnxruntime as ort

    avail = ort.get_available_providers()
    if provider not in avail:
        raise SettingError(
            "provider",
            f"{provider!r} is not available in this onnxruntime ({ort.__version__}); "
            f"available: {', '.join(avail)}",
        )


def open_session(
    path: str | Path,
    *,
    threads: int = 1,
    optimization: str = "all",
    provider: str = DEFAULT_PROVIDER,
) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``path`` with :func:`session_options`.

    A file onnxruntime cannot load raises :class:`~hapi_dse.errors.ArtefactError` (one line).
    """
    import onnxruntime as ort

    check_provider(provider)
    opts = session_options(threads, optimization)
    try:
        return ort.InferenceSession(str(path), opts, providers=[provider])
    except Exception as e:  # onnxruntime's own types (InvalidProtobuf, Fail, NoSuchFile...)
        raise ArtefactError(
            f"{path}: onnxruntime cannot load it ({first_line(e)}); export the graph again "
            "('hapi profile --export-only' or 'hapi export')"
        ) from None
