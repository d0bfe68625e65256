"""Per-exit temperature scaling (Guo et al. 2017), fitted on the validation split."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def fit_temperatures(logits: torch.Tensor, labels: torch.Tensor, iters: int = 200) -> np.ndarray:
    """One temperature per column of ``logits (n, k, classes)`` minimising the val NLL.

    The columns are independent, so the summed NLL is minimised jointly over ``log T``.
    """
    logits = logits.detach().double()
    labels = labels.long()
    log_t = torch.zeros(logits.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nll_per_column(logits, labels, log_t.exp()).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return log_t.detach().exp().clamp(0.05, 20.0).float().numpy()


def nll_per_column(logits: torch.Tensor, labels: torch.Tensor, temps: torch.Tensor) -> torch.Tensor:
    n, k, c = logits.shape
    scaled = logits / temps.view(1, k, 1)
    lab = labels.view(n, 1).expand(n, k)
    return (
        F.cross_entropy(scaled.reshape(n * k, c), lab.reshape(-1), reduction="none")
        .view(n, k)
        .mean(0)
    )


def exit_statistics(
    logits: torch.Tensor, temps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated confidence (max softmax), entropy normalised to 0..1, prediction."""
    _, k, c = logits.shape
    probs = torch.softmax(logits.double() / torch.as_tensor(temps).double().view(1, k, 1), -1)
    conf, pred = probs.max(-1)
    ent = -(probs * probs.clamp_min(1e-300).log()).sum(-1) / np.log(c)
    return (
        conf.float().numpy(),
        ent.clamp(0, 1).float().numpy(),
        pred.numpy().astype(np.int16),
    )
