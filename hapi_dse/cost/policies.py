"""Exit policies: when does a sample leave at an exit?

Every policy implements :class:`ExitPolicy`. The cost model calls :meth:`ExitPolicy.keys`
once per design evaluation to name the "fires" mask of each exit, and
:meth:`ExitPolicy.fires` only the first time it meets a key (masks are cached, and with
thresholds on a grid the same few masks recur across thousands of designs). A sample exits
at the first exit whose mask is true, else at the final classifier.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from typing import Protocol, cast

import numpy as np

from hapi_dse.errors import unknown_name


class ColumnData(Protocol):
    """Per-column statistics, each array ``(k, n)``: one row per exit column."""

    confidence: np.ndarray  # float64
    entropy: np.ndarray  # float64
    prediction: np.ndarray  # int


class ExitPolicy(ABC):
    """One exit rule. ``keys`` names each exit's mask; ``fires`` computes a mask by name."""

    name: str
    uses_threshold: bool = True

    @abstractmethod
    def keys(
        self, cols: Sequence[int], thresholds: Sequence[float], patience: int
    ) -> list[Hashable | None]:
        """One hashable key per exit of a design (``None``: this exit never fires).

        A key names the mask of one column (the exit's own): equal keys, equal masks."""

    @abstractmethod
    def fires(self, key: Hashable, data: ColumnData) -> np.ndarray:
        """The boolean ``(n,)`` mask of samples for which the exit named ``key`` fires."""

    def fires_many(self, keys: Sequence[Hashable], data: ColumnData) -> np.ndarray:
        """``(len(keys), n)`` masks at once (override to vectorise)."""
        return np.stack([self.fires(k, data) for k in keys])

    def parts(self, key: Hashable) -> list[tuple[Hashable, int]] | None:
        """Keys (with their columns) whose masks AND to this key's mask, or ``None``.

        Lets the cost model build a mask from cached bit-packed ones (a few word-wise ANDs)
        instead of from the statistics."""
        return None

    def grid(
        self, cols: Sequence[int], positions: Sequence[int], thresholds: Sequence[float]
    ) -> list[tuple[int, list[Hashable]]]:
        """Keys worth computing before a search, per column: called once by
        :meth:`~hapi_dse.cost.CostModel.prepare` with the search's threshold grid."""
        return [
            (c, [k for k in self.keys([c] * len(thresholds), thresholds, 0) if k is not None])
            for c in cols
        ]


class _ScoreThreshold(ExitPolicy):
    """Exit when one per-sample score of the exit's column passes the threshold: at least it
    (``at_least``) or at most it."""

    at_least: bool

    def _score(self, data: ColumnData, col: int) -> np.ndarray:
        raise NotImplementedError

    def _passes(self, score: np.ndarray, t: np.ndarray | float) -> np.ndarray:
        return np.asarray(score >= t if self.at_least else score <= t)

    def keys(
        self, cols: Sequence[int], thresholds: Sequence[float], patience: int
    ) -> list[Hashable | None]:
        return [(self.name, c, float(t)) for c, t in zip(cols, thresholds, strict=True)]

    def fires(self, key: Hashable, data: ColumnData) -> np.ndarray:
        _, col, t = cast(tuple[str, int, float], key)
        return self._passes(self._score(data, col), t)

    def fires_many(self, keys: Sequence[Hashable], data: ColumnData) -> np.ndarray:
        cols = {cast(tuple[str, int, float], k)[1] for k in keys}
        if len(cols) != 1:
            return super().fires_many(keys, data)
        ts = np.array([cast(tuple[str, int, float], k)[2] for k in keys], np.float64)
        return self._passes(self._score(data, cols.pop())[None, :], ts[:, None])


class MaxSoftmax(_ScoreThreshold):
    """Exit when the calibrated max-softmax confidence is at least the threshold."""

    name = "max_softmax"
    at_least = True

    def _score(self, data: ColumnData, col: int) -> np.ndarray:
        return np.asarray(data.confidence[col])


class Entropy(_ScoreThreshold):
    """Exit when the normalised entropy of the softmax is at most the threshold."""

    name = "entropy"
    at_least = False

    def _score(self, data: ColumnData, col: int) -> np.ndarray:
        return np.asarray(data.entropy[col])


class Patience(ExitPolicy):
    """Exit when the last ``patience`` exits of the design (this one included) agree.

    Only the design's own exits count; with fewer than ``patience`` exits so far the exit
    cannot fire. ``patience = 1`` exits every sample at the first exit.
    """

    name = "patience"
    uses_threshold = False

    def keys(
        self, cols: Sequence[int], thresholds: Sequence[float], patience: int
    ) -> list[Hashable | None]:
        c = list(cols)
        return [
            ("patience", tuple(c[i + 1 - patience : i + 1])) if i + 1 >= patience else None
            for i in range(len(c))
        ]

    def grid(
        self, cols: Sequence[int], positions: Sequence[int], thresholds: Sequence[float]
    ) -> list[tuple[int, list[Hashable]]]:
        """Every two-exit window (the masks of patience 2; longer windows come lazily)."""
        return [
            (b, [("patience", (a, b)) for a in cols if positions[a] < positions[b]]) for b in cols
        ]

    def parts(self, key: Hashable) -> list[tuple[Hashable, int]] | None:
        _, window = cast(tuple[str, tuple[int, ...]], key)
        if len(window) <= 2:
            return None
        return [(("patience", (a, b)), b) for a, b in itertools.pairwise(window)]

    def fires(self, key: Hashable, data: ColumnData) -> np.ndarray:
        _, window = cast(tuple[str, tuple[int, ...]], key)
        first = data.prediction[window[0]]
        out = np.ones(first.shape, dtype=bool)
        for c in window[1:]:
            out &= data.prediction[c] == first
        return out


POLICY_REGISTRY: dict[str, ExitPolicy] = {p.name: p for p in (MaxSoftmax(), Entropy(), Patience())}


def get_policy(name: str) -> ExitPolicy:
    try:
        return POLICY_REGISTRY[name]
    except KeyError:
        raise unknown_name("exit policy", name, POLICY_REGISTRY) from None
