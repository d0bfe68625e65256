"""Losses of IC-only training: cross-entropy, optionally distilled from the final exit."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hapi_dse.training.config import Distill


def exit_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher: torch.Tensor | None = None,
    distill: Distill | None = None,
) -> torch.Tensor:
    """Loss of one exit: CE, or ``(1-alpha) CE + alpha T^2 KL(teacher_T || student_T)``."""
    ce = F.cross_entropy(logits, labels)
    if distill is None or teacher is None:
        return ce
    t = distill.temperature
    kl = F.kl_div(
        F.log_softmax(logits / t, dim=-1),
        F.log_softmax(teacher / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - distill.alpha) * ce + distill.alpha * t * t * kl
