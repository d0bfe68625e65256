"""What every export is checked on: one real sample per exit path, and how the check is recorded.

:func:`plan_checks` picks, from a batched PyTorch pass over samples of the run's validation
split, one sample that takes each exit path at the searched thresholds. When no sample takes
a path, a real sample is sent down it with the thresholds overridden (``forced``; possible
for the threshold policies, not for ``patience``, whose uncovered paths are reported as
unchecked). :class:`CheckedDesign` carries a design with its plan to either format's export;
:func:`check_info` is the ``check`` object of the export sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hapi_dse.onnx_tools import CHECK_ATOL


@dataclass
class CheckPlan:
    paths: list[int]  # the exit index each checked sample takes
    samples: list[int]  # index into the validation split, one per path
    forced: list[bool]  # True: sent down its path with thresholds overridden
    thresholds: list[list[float]]  # the thresholds fed with each sample
    path_counts: list[int]  # how many of the scanned samples take each path


def plan_checks(net: Any, design: Any, temps: list[float], x: np.ndarray) -> CheckPlan:
    """One real sample per exit path, from a batched PyTorch pass over ``x``."""
    import torch

    from hapi_dse.cost.policies import get_policy
    from hapi_dse.graphs.graph import build_stages, decide

    stages = build_stages(net, design, layout_anchor=False).eval()
    logits = []
    with torch.no_grad():
        h = torch.from_numpy(x)
        for st in stages:
            h, z = st(h)
            logits.append(z.numpy())
    thr = [e.threshold for e in design.exits]
    path = decide(design.policy, design.patience, logits, thr, temps)
    # prefer samples whose path does not change when the thresholds move by the check's
    # tolerance: float differences between PyTorch and onnxruntime cannot flip their decisions
    robust = np.ones(len(path), bool)
    for delta in (-CHECK_ATOL, CHECK_ATOL):
        moved = [t + delta for t in thr]
        robust &= decide(design.policy, design.patience, logits, moved, temps) == path
    m = len(design.exits)
    counts = np.bincount(path, minlength=m + 1).tolist()
    forcing = get_policy(design.policy).forcing
    paths: list[int] = []
    samples, forced, thresholds = [], [], []
    for i in range(m + 1):
        hits = np.flatnonzero(path == i)
        if hits.size:
            good = hits[robust[hits]]
            paths.append(i)
            samples.append(int(good[0] if good.size else hits[0]))
            forced.append(False)
            thresholds.append(thr)
        elif forcing is not None:
            always, never = forcing
            paths.append(i)
            samples.append(0)
            forced.append(True)
            thresholds.append([never] * i + [always] * (m - i))
        else:  # patience: no input forces a path; the check reports it uncovered
            continue
    return CheckPlan(paths, samples, forced, thresholds, counts)


@dataclass
class CheckedDesign:
    """What an export is built from and checked on: the network, the design, its exit
    temperatures, the samples ``x`` and the plan of which of them check which exit path."""

    net: Any
    design: Any
    temps: list[float]
    x: np.ndarray
    plan: CheckPlan

    @classmethod
    def prepare(cls, net: Any, design: Any, temps: list[float], x: np.ndarray) -> CheckedDesign:
        return cls(net, design, temps, x, plan_checks(net, design, temps, x))


def check_info(plan: CheckPlan, diffs: dict[str, float], checker: str) -> dict[str, Any]:
    """The sidecar's ``check``: the checker, the tolerance, each output's max abs difference
    from PyTorch and the sample checked on each exit path."""
    return {
        "onnx_checker": checker,
        "passed": True,
        "atol": CHECK_ATOL,
        "max_abs_diff": diffs,
        "samples_split": "val",
        "paths": [
            {"exit_index": i, "val_sample": s, "thresholds_forced": f}
            for i, s, f in zip(plan.paths, plan.samples, plan.forced, strict=True)
        ],
        "paths_taken_by_real_thresholds": plan.path_counts,
        "paths_unchecked": max(len(plan.path_counts) - len(plan.samples), 0),
    }
