"""Exit head architectures. Every head type is attached after every block.

A head factory takes the exit's feature shape and the number of classes and returns a module
mapping ``(N, C, H, W)`` features to ``(N, classes)`` logits.
"""

from __future__ import annotations

import torch
from torch import nn

from hapi_dse.models.registry import Registry

HEADS: Registry[nn.Module] = Registry("head")


class _Pooled(nn.Module):
    def __init__(self, body: nn.Module, fc: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.body(x)), 1))


@HEADS.register("linear")
def linear_head(channels: int, height: int, width: int, num_classes: int) -> nn.Module:
    """Global average pool + fully connected: the cheapest head."""
    return _Pooled(nn.Identity(), nn.Linear(channels, num_classes))


@HEADS.register("conv")
def conv_head(channels: int, height: int, width: int, num_classes: int) -> nn.Module:
    """conv3x3-bn-relu + global pool + fc: spends compute to see local structure."""
    body = nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )
    return _Pooled(body, nn.Linear(channels, num_classes))


@HEADS.register("mlp")
def mlp_head(channels: int, height: int, width: int, num_classes: int) -> nn.Module:
    """Global pool + fc-relu-fc: a non-linear classifier on pooled features."""
    hidden = max(64, 2 * channels)
    fc = nn.Sequential(
        nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
    )
    return _Pooled(nn.Identity(), fc)
