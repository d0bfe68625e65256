"""FLOPs and parameter counts per block and per head (``flops.csv``).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` at batch size 1; it counts
convolutions and matrix products only (BatchNorm, activations and pooling count 0).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hapi_dse.models.early_exit import EarlyExitNet


def _count(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = module(x)
    return int(counter.get_total_flops()), y


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flops_table(net: EarlyExitNet, input_shape: tuple[int, ...]) -> list[dict[str, Any]]:
    """Rows ``segment, position, head, flops, params`` for blocks, heads and the final."""
    was_training = net.training
    net.eval()
    rows: list[dict[str, Any]] = []
    x = torch.zeros(1, *input_shape)
    feats = {}
    for i, block in enumerate(net.backbone.blocks):
        f, x = _count(block, x)
        feats[i] = x
        rows.append(
            {"segment": "block", "position": i, "head": "", "flops": f, "params": _params(block)}
        )
    for p, h in net.columns[:-1]:
        f, _ = _count(net.heads[f"p{p}_{h}"], feats[p])
        rows.append(
            {
                "segment": "head",
                "position": p,
                "head": h,
                "flops": f,
                "params": _params(net.heads[f"p{p}_{h}"]),
            }
        )
    last = net.backbone.num_blocks - 1
    f, _ = _count(net.backbone.classifier, feats[last])
    rows.append(
        {
            "segment": "final",
            "position": last,
            "head": "final",
            "flops": f,
            "params": _params(net.backbone.classifier),
        }
    )
    net.train(was_training)
    return rows
