"""The overprovisioned early-exit network: a backbone with every head type after every block."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hapi_dse.models.backbones import Backbone, create_backbone
from hapi_dse.models.heads import HEADS
from hapi_dse.readers import torch_load_weights


def head_key(position: int, head: str) -> str:
    return f"p{position}_{head}"


class EarlyExitNet(nn.Module):
    """``backbone`` plus ``heads[head_key(position, head)]`` for every position and head type.

    Columns (the order of exit statistics) are every (position, head) in increasing position,
    heads in the order given, then the final classifier as ``(last position, "final")``.
    """

    def __init__(self, backbone: Backbone, head_types: Sequence[str], num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_types = list(head_types)
        self.num_classes = num_classes
        self.heads = nn.ModuleDict()
        for e in backbone.exits:
            for h in self.head_types:
                self.heads[head_key(e.position, h)] = HEADS.create(
                    h,
                    channels=e.channels,
                    height=e.height,
                    width=e.width,
                    num_classes=num_classes,
                )

    @property
    def columns(self) -> list[tuple[int, str]]:
        cols = [(e.position, h) for e in self.backbone.exits for h in self.head_types]
        return [*cols, (self.backbone.num_blocks - 1, "final")]

    def head(self, position: int, head: str) -> nn.Module:
        if head == "final":
            return self.backbone.classifier
        return self.heads[head_key(position, head)]

    def all_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Logits of every column, ``(N, k, classes)``, from one backbone forward."""
        feats, final = self.backbone.forward_intermediates(x)
        assert final is not None
        outs = [self.heads[head_key(p, h)](feats[p]) for p, h in self.columns[:-1]]
        return torch.stack([*outs, final], dim=1), feats


def architecture_spec(
    backbone: str,
    backbone_kwargs: dict[str, Any],
    head_types: Sequence[str],
    input_shape: Sequence[int],
    num_classes: int,
) -> dict[str, Any]:
    return {
        "backbone": backbone,
        "backbone_kwargs": dict(backbone_kwargs),
        "heads": list(head_types),
        "input_shape": list(input_shape),
        "num_classes": int(num_classes),
    }


def model_id(arch: dict[str, Any], state_shapes: dict[str, list[int]], weights_sha256: str) -> str:
    """Backbone name + short hash (8 hex digits) of the architecture (spec and every
    tensor's shape) and of the weights (the sha256 of ``weights.pt``): two trainings of one
    architecture never share an id (DESIGN 2.1)."""
    blob = json.dumps(
        {"arch": arch, "shapes": state_shapes, "weights": weights_sha256}, sort_keys=True
    ).encode()
    name = arch["backbone"].split(":")[-1]
    return f"{name}-{hashlib.sha256(blob).hexdigest()[:8]}"


def weights_identity(arch: dict[str, Any], weights: str | Path) -> tuple[str, str]:
    """``(model_id, weights_sha256)`` of the saved state dict ``weights`` (a ``weights.pt``)
    of a network built from ``arch``: what ``hapi train`` records in model.json once
    ``weights.pt`` is written, and how any run's id is recomputed."""
    from hapi_dse.provenance import sha256_file

    digest = sha256_file(weights)
    state = torch_load_weights(weights)
    shapes = {k: list(v.shape) for k, v in state.items()}
    return model_id(arch, shapes, digest), digest


def build(arch: dict[str, Any]) -> EarlyExitNet:
    """Build an (untrained) early-exit network from an architecture spec (see model.json)."""
    bb = create_backbone(
        arch["backbone"],
        num_classes=arch["num_classes"],
        input_shape=arch["input_shape"],
        **arch.get("backbone_kwargs", {}),
    )
    return EarlyExitNet(bb, arch["heads"], arch["num_classes"])


def state_shapes(net: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in net.state_dict().items()}
