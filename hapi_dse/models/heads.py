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


class MixedPool(nn.Module):
    """SDN's feature reduction: a learned mix of max and average pooling over ``k x k``
    windows, ``sigmoid(a) * max + (1 - sigmoid(a)) * avg`` (Kaya et al., 2019)."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.max = nn.MaxPool2d(kernel, kernel)
        self.avg = nn.AvgPool2d(kernel, kernel)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.alpha)
        return a * self.max(x) + (1 - a) * self.avg(x)


#: the mixed-pooling head reduces its feature map to at most this side
SDN_SIDE = 4


@HEADS.register("sdn")
def sdn_head(channels: int, height: int, width: int, num_classes: int) -> nn.Module:
    """SDN's internal classifier: mixed max/average pooling to about 4 x 4, then fc. Keeps
    where things are, which a global pool throws away."""
    k = max(-(-max(height, width) // SDN_SIDE), 1)
    h, w = max(height // k, 1), max(width // k, 1)
    pool: nn.Module = MixedPool(k) if k > 1 and height >= k and width >= k else nn.Identity()
    if isinstance(pool, nn.Identity):
        h, w = height, width
    return nn.Sequential(pool, nn.Flatten(1), nn.Linear(channels * h * w, num_classes))


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    k = 3 if groups > 1 or cin == cout else 1
    return [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


@HEADS.register("conv2")
def conv2_head(channels: int, height: int, width: int, num_classes: int) -> nn.Module:
    """Two conv3x3-bn-relu (the second strided on maps of 8 and more) + global pool + fc:
    the deeper branch that MSDNet-style classifiers use early in the network."""
    stride = 2 if min(height, width) >= 8 else 1
    body = nn.Sequential(
        *_conv_bn_relu(channels, channels), *_conv_bn_relu(channels, channels, stride)
    )
    return _Pooled(body, nn.Linear(channels, num_classes))


@HEADS.register("dws")
def dws_head(channels: int, height: int, width: int, num_classes: int) -> nn.Module:
    """Depthwise-separable branch: depthwise conv3x3-bn-relu, pointwise 1x1 to twice the
    channels-bn-relu, global pool + fc; most of a conv head's view for a fraction of its
    FLOPs."""
    body = nn.Sequential(
        *_conv_bn_relu(channels, channels, groups=channels),
        *_conv_bn_relu(channels, 2 * channels),
    )
    return _Pooled(body, nn.Linear(2 * channels, num_classes))
