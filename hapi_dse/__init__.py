"""hapi: hardware-aware design-space exploration of early-exit neural networks.

Train once (an overprovisioned early-exit network), profile per device, search per device
under SLOs, export the chosen design. Heavy dependencies (torch, onnxruntime, matplotlib)
are imported inside the functions that need them, so importing hapi_dse stays cheap.

From Python, ``import hapi_dse as hapi``: the names of :mod:`hapi_dse.api`, the documented
API (train, profile, search, export, evaluate, plot information) that the commands are thin
shells over, are attributes of the package, imported on first use (PEP 562): ``import
hapi_dse`` itself imports none of them. (``hapi.search`` is the subpackage
:mod:`hapi_dse.search`, which calls :func:`hapi_dse.api.search`.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: with the version, the names of :mod:`hapi_dse.api` (its ``__all__``, kept equal by a test)
__all__ = [
    "Design",
    "Evaluation",
    "ExportedDesign",
    "TrainedRun",
    "__version__",
    "evaluate",
    "export",
    "load_costs",
    "load_run",
    "plot_info",
    "predict",
    "profile",
    "search",
    "train",
]
_API = frozenset(__all__) - {"__version__"}

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time, __getattr__ below
    from hapi_dse.api import (
        Design,
        Evaluation,
        ExportedDesign,
        TrainedRun,
        evaluate,
        export,
        load_costs,
        load_run,
        plot_info,
        predict,
        profile,
        search,
        train,
    )


def __getattr__(name: str) -> Any:
    if name == "search":  # the subpackage hapi_dse.search, callable as api.search: Python
        import importlib  # sets this attribute to the subpackage whenever it is imported

        return importlib.import_module("hapi_dse.search")
    if name in _API:
        from hapi_dse import api

        return getattr(api, name)
    raise AttributeError(f"module 'hapi_dse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
