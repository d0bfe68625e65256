"""Losses of IC-only training: cross-entropy, optionally distilled from the final exit."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hapi_dse.errors import UsageError


@dataclass(frozen=True)
class Distill:
    """Knowledge distillation (Hinton et al. 2015): soft targets at temperature ``T``."""

    temperature: float
    alpha: float

    @classmethod
    def parse(cls, text: str) -> Distill:
        t, sep, a = text.partition(":")
        try:
            if not sep:
                raise ValueError
            out = cls(float(t), float(a))
        except ValueError:
            raise UsageError(f"--distill {text!r}: expected T:alpha, e.g. 3:0.5") from None
        if not (math.isfinite(out.temperature) and out.temperature > 0) or not 0 <= out.alpha <= 1:
            raise UsageError(
                f"--distill {text!r}: T must be > 0 (and finite) and alpha in 0..1, e.g. 3:0.5"
            )
        return out


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
