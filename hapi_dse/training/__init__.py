"""Training: backbone, then IC-only exit heads, calibration and cached exit statistics.

:class:`TrainConfig` is torch-free; :func:`train` and :func:`summary_table` import torch
(through :mod:`hapi_dse.training.trainer`) on first use.
"""

from typing import Any

from hapi_dse.training.config import Distill, TrainConfig


def __getattr__(name: str) -> Any:
    if name in ("train", "summary_table"):
        from hapi_dse.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'hapi_dse.training' has no attribute {name!r}")


__all__ = ["Distill", "TrainConfig", "summary_table", "train"]
