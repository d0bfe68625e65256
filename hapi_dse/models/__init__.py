"""Backbones, exit heads and the overprovisioned early-exit network."""

from hapi_dse.models.backbones import BACKBONES, Backbone, ExitPoint, create_backbone
from hapi_dse.models.early_exit import EarlyExitNet, build
from hapi_dse.models.heads import HEADS

__all__ = [
    "BACKBONES",
    "HEADS",
    "Backbone",
    "EarlyExitNet",
    "ExitPoint",
    "build",
    "create_backbone",
]
