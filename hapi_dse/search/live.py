"""What a running search has found so far, for its progress bar: trials per second and the
hypervolume of the feasible front.

The hypervolume is measured against the plain backbone, so that it reads the same on every
device and table: each objective is divided by the backbone's value on val (a minimised
metric counts below 1, the backbone's own level; a maximised one above 0), and the figure
is the volume those normalised points dominate. One design at the backbone's accuracy and
half its mean latency scores 0.5; the backbone itself scores 0. It only grows as a search
goes on, so it shows when a search stops finding better designs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from hapi_dse.cost import Objective


class LiveFront:
    """The non-dominated feasible designs seen so far (normalised losses) and their rate."""

    def __init__(self, objectives: Sequence[Objective], backbone: Mapping[str, float]) -> None:
        self._sign = np.array([-1.0 if o.maximize else 1.0 for o in objectives])
        scale = [abs(float(backbone.get(o.metric, 0.0))) for o in objectives]
        self._scale = np.array([s if s > 0 else 1.0 for s in scale])
        # the reference point: the backbone's level for minimised metrics, 0 for maximised
        self._ref = np.array([0.0 if o.maximize else 1.0 for o in objectives])
        self._front = np.empty((0, len(objectives)))
        self._start = time.perf_counter()
        self.trials = 0

    def add(self, values: Sequence[float], feasible: bool = True) -> None:
        """Count one finished trial; keep its point when feasible and not dominated."""
        self.trials += 1
        if not feasible:
            return
        loss = self._sign * np.asarray(values, dtype=float) / self._scale
        if not np.all(np.isfinite(loss)) or np.any(loss >= self._ref):
            return  # no better than the backbone in some objective: dominates no volume
        f = self._front
        if len(f) and np.any(np.all(f <= loss, axis=1)):
            return
        keep = ~np.all(loss <= f, axis=1) if len(f) else np.ones(0, bool)
        self._front = np.vstack([f[keep], loss])

    def hypervolume(self) -> float:
        """The volume the front dominates up to the reference point (0 when empty)."""
        if not len(self._front):
            return 0.0
        if self._front.shape[1] == 1:
            return float(self._ref[0] - self._front[:, 0].min())
        if self._front.shape[1] == 2:
            pts = self._front[np.argsort(self._front[:, 0])]
            right = np.append(pts[1:, 0], self._ref[0])
            return float(np.sum((right - pts[:, 0]) * (self._ref[1] - pts[:, 1])))
        from optuna._hypervolume import compute_hypervolume

        return float(compute_hypervolume(self._front, self._ref, assume_pareto=True))

    def rate(self) -> float:
        """Trials per second since the front was made."""
        elapsed = time.perf_counter() - self._start
        return self.trials / elapsed if elapsed > 0 else 0.0

    def status(self) -> str:
        """``"1,234 trials/s  hv 0.4321"``: the progress bar's postfix."""
        return f"{self.rate():,.0f} trials/s  hv {self.hypervolume():.4f}"


__all__ = ["LiveFront"]
