"""What a running search has found so far, for its progress bar: trials per second and the
hypervolume of the feasible front.

The hypervolume is measured against the plain backbone, so that it reads the same on every
device and table: each objective is divided by the backbone's value on val (a minimised
metric counts below 1, the backbone's own level; a maximised one above 0), and the figure
is the volume those normalised points dominate. One design at the backbone's accuracy and
half its mean latency scores 0.5; the backbone itself scores 0. It only grows as a search
goes on, so it shows when a search stops finding better designs.

The front is hapi's one Pareto front (:func:`hapi_dse.cost.metrics.pareto_front`: of equal
points the first found) and the figure is :func:`hypervolume`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from hapi_dse.cost import Objective
from hapi_dse.cost.metrics import pareto_front
from hapi_dse.search.optuna_compat import compute_hypervolume

#: new points wait in a list until the front is read, or until there are this many
_MERGE_AT = 256


def hypervolume(losses: np.ndarray, reference: Sequence[float] | np.ndarray) -> float:
    """The volume that the rows of ``losses`` (every column minimised) dominate up to the
    point ``reference``: rows not finite and below ``reference`` in every column dominate
    none and are left out, the rest reduce to their :func:`~hapi_dse.cost.metrics.pareto_front`;
    exact in any dimension (one and two directly, more with Optuna's WFG)."""
    ref = np.asarray(reference, float)
    pts = np.asarray(losses, float).reshape(-1, len(ref))
    pts = pts[np.all(np.isfinite(pts), axis=1) & np.all(pts < ref, axis=1)]
    if not len(pts):
        return 0.0
    pts = pts[pareto_front(pts)]
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    if pts.shape[1] == 2:
        pts = pts[np.argsort(pts[:, 0])]
        right = np.append(pts[1:, 0], ref[0])
        return float(np.sum((right - pts[:, 0]) * (ref[1] - pts[:, 1])))
    return compute_hypervolume(pts, ref, assume_pareto=True)


class LiveFront:
    """The non-dominated feasible designs seen so far (normalised losses) and their rate."""

    def __init__(self, objectives: Sequence[Objective], backbone: Mapping[str, float]) -> None:
        self._sign = np.array([-1.0 if o.maximize else 1.0 for o in objectives])
        scale = [abs(float(backbone.get(o.metric, 0.0))) for o in objectives]
        self._scale = np.array([s if s > 0 else 1.0 for s in scale])
        # the reference point: the backbone's level for minimised metrics, 0 for maximised
        self._ref = np.array([0.0 if o.maximize else 1.0 for o in objectives])
        self._front = np.empty((0, len(objectives)))
        self._new: list[np.ndarray] = []  # points not yet merged into the front
        self._start = time.perf_counter()
        self.trials = 0

    def add(self, values: Sequence[float], feasible: bool = True) -> None:
        """Count one finished trial; keep its point when feasible (the front is brought up
        to date when read, or every :data:`_MERGE_AT` points)."""
        self.trials += 1
        if not feasible:
            return
        loss = self._sign * np.asarray(values, dtype=float) / self._scale
        if not np.all(np.isfinite(loss)) or np.any(loss >= self._ref):
            return  # no better than the backbone in some objective: dominates no volume
        self._new.append(loss)
        if len(self._new) >= _MERGE_AT:
            self.front()

    def front(self) -> np.ndarray:
        """The Pareto front of the feasible points so far, as normalised losses, in the order
        they were found (of equal points, the first)."""
        if self._new:
            pts = np.vstack([self._front, *self._new])
            self._front = pts[pareto_front(pts)]
            self._new = []
        return self._front

    def hypervolume(self) -> float:
        """The volume the front dominates up to the reference point (0 when empty)."""
        return hypervolume(self.front(), self._ref)

    def rate(self) -> float:
        """Trials per second since the front was made."""
        elapsed = time.perf_counter() - self._start
        return self.trials / elapsed if elapsed > 0 else 0.0

    def status(self) -> str:
        """``"1,234 trials/s  hv 0.4321"``: the progress bar's postfix."""
        return f"{self.rate():,.0f} trials/s  hv {self.hypervolume():.4f}"


__all__ = ["LiveFront", "hypervolume"]
