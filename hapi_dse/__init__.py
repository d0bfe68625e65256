"""hapi: hardware-aware design-space exploration of early-exit neural networks.

Train once (an overprovisioned early-exit network), profile per device, search per device
under SLOs, export the chosen design. Heavy dependencies (torch, onnxruntime, matplotlib)
are imported inside the functions that need them, so importing hapi_dse stays cheap.

From Python, ``import hapi_dse.api as hapi``: :mod:`hapi_dse.api` is the documented API
(search, profile, export, plot information) that the commands are thin shells over.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
