"""Exit policies: when does a sample leave at an exit?

A policy is one class, registered by name with :func:`register_policy`, and it carries
everything hapi needs of it: its name, its kind (a :class:`ThresholdPolicy` compares a
per-exit score with the exit's threshold; ``patience`` is structural, a window of the
design's exits), the thresholds that force it to fire always or never, its masks for the
cost model, and its decision rule for the deployed graphs.

The cost model calls :meth:`ExitPolicy.keys` once per design evaluation to name the "fires"
mask of each exit, and :meth:`ExitPolicy.fires` only the first time it meets a key (masks
are cached, and with thresholds on a grid the same few masks recur across thousands of
designs). A sample exits at the first exit whose mask is true, else at the final classifier.

A threshold policy writes its deployed rule once (:meth:`ThresholdPolicy.score`), in the
operations of :class:`Ops`, which run it on float32 numpy arrays (:data:`NUMPY_OPS`, the
vectorised rule of ``decide``), torch tensors (the graphs' modules) and ONNX nodes (the
assembled graphs): the same float32 operations in the same order everywhere.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from typing import Any, Protocol, TypeVar, cast

import numpy as np

from hapi_dse.errors import unknown_name

T = TypeVar("T")
P = TypeVar("P", bound="type[ExitPolicy]")


class ColumnData(Protocol):
    """Per-column statistics, each array ``(k, n)``: one row per exit column."""

    confidence: np.ndarray  # float64
    entropy: np.ndarray  # float64
    prediction: np.ndarray  # int


class Ops(Protocol[T]):
    """The float32 operations a deployed exit rule is written in (:class:`ThresholdPolicy`).

    Three implementations run the one rule: numpy (:data:`NUMPY_OPS`), torch
    (:mod:`hapi_dse.graphs.graph`) and ONNX nodes (:mod:`hapi_dse.graphs.compose`). Axes are
    the last one (the classes); reductions drop it unless they say they keep it.
    """

    def div(self, a: T, b: T) -> T: ...
    def sub(self, a: T, b: T) -> T: ...
    def mul(self, a: T, b: T) -> T: ...
    def neg(self, a: T) -> T: ...
    def exp(self, a: T) -> T: ...
    def reciprocal(self, a: T) -> T: ...
    def max_keep(self, a: T) -> T:
        """The maximum over the last axis, kept as an axis of size 1."""
        ...

    def sum(self, a: T) -> T:
        """The sum over the last axis."""
        ...

    def log_softmax(self, a: T) -> T:
        """Log-softmax over the last axis."""
        ...

    def div_const(self, a: T, value: float, hint: str) -> T:
        """``a`` divided by the float32 constant ``value`` (``hint`` names it in a graph)."""
        ...

    def ge(self, a: T, b: T) -> T: ...
    def le(self, a: T, b: T) -> T: ...


class _NumpyOps:
    """:class:`Ops` on float32 numpy arrays."""

    def div(self, a: Any, b: Any) -> Any:
        return a / b

    def sub(self, a: Any, b: Any) -> Any:
        return a - b

    def mul(self, a: Any, b: Any) -> Any:
        return a * b

    def neg(self, a: Any) -> Any:
        return -a

    def exp(self, a: Any) -> Any:
        return np.exp(a)

    def reciprocal(self, a: Any) -> Any:
        return np.float32(1.0) / a

    def max_keep(self, a: Any) -> Any:
        return a.max(-1, keepdims=True)

    def sum(self, a: Any) -> Any:
        return a.sum(-1)

    def log_softmax(self, a: Any) -> Any:
        return a - np.log(np.exp(a).sum(-1, keepdims=True))

    def div_const(self, a: Any, value: float, hint: str) -> Any:
        return a / np.float32(value)

    def ge(self, a: Any, b: Any) -> Any:
        return a >= b

    def le(self, a: Any, b: Any) -> Any:
        return a <= b


#: the deployed rules on float32 numpy arrays (``decide``: every sample at once)
NUMPY_OPS: Ops[Any] = _NumpyOps()


class ExitPolicy(ABC):
    """One exit rule. ``keys`` names each exit's mask; ``fires`` computes a mask by name.

    ``uses_threshold`` is the policy's kind: a :class:`ThresholdPolicy`, or a structural
    policy (``patience``) whose exits read no threshold and whose deployed decision the graph
    builders write from the design's window.
    """

    name: str
    uses_threshold: bool = False

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

    def first_decision(self, patience: int) -> int:
        """Index of the design's first exit that decides (an ``If`` in the graph): the
        exits before it only compute their head."""
        return 0

    @property
    def forcing(self) -> tuple[float, float] | None:
        """Thresholds that make every exit fire ``(always, never)``, to send a sample down any
        exit path (export checks, deployment probes); ``None``: no input forces a path."""
        return None


class ThresholdPolicy(ExitPolicy):
    """Exit when a per-sample score of the exit passes the exit's threshold: at least it
    (``at_least``) or at most it.

    A subclass gives the score twice: :meth:`column_score` from the exit statistics (the
    cost model) and :meth:`score` from the exit's logits (the deployed graphs), both a
    number in 0..1.
    """

    uses_threshold = True
    at_least: bool

    @abstractmethod
    def column_score(self, data: ColumnData, col: int) -> np.ndarray:
        """The score of every sample at exit column ``col``, from the statistics: ``(n,)``."""

    @abstractmethod
    def score(self, ops: Ops[T], z: T, classes: int) -> T:
        """The score from an exit's logits scaled by its temperature and shifted by their
        maximum (``z``, last axis the ``classes`` classes), in the operations ``ops``."""

    def decision(self, ops: Ops[T], logits: T, threshold: T, temperature: T, classes: int) -> T:
        """The deployed rule on an exit's raw logits: does the exit fire (boolean)?"""
        scaled = ops.div(logits, temperature)
        shifted = ops.sub(scaled, ops.max_keep(scaled))
        s = self.score(ops, shifted, classes)
        return ops.ge(s, threshold) if self.at_least else ops.le(s, threshold)

    @property
    def forcing(self) -> tuple[float, float]:
        """Beyond the scores' range 0..1 on either side."""
        return (-1.0, 2.0) if self.at_least else (2.0, -1.0)

    @property
    def default_range(self) -> tuple[float, float]:
        """The thresholds a search space gives the policy when it names none: the upper half
        of 0..1 for a floor, the lower half for a ceiling."""
        return (0.5, 1.0) if self.at_least else (0.0, 0.5)

    def _passes(self, score: np.ndarray, t: np.ndarray | float) -> np.ndarray:
        return np.asarray(score >= t if self.at_least else score <= t)

    def keys(
        self, cols: Sequence[int], thresholds: Sequence[float], patience: int
    ) -> list[Hashable | None]:
        return [(self.name, c, float(t)) for c, t in zip(cols, thresholds, strict=True)]

    def fires(self, key: Hashable, data: ColumnData) -> np.ndarray:
        _, col, t = cast(tuple[str, int, float], key)
        return self._passes(self.column_score(data, col), t)

    def fires_many(self, keys: Sequence[Hashable], data: ColumnData) -> np.ndarray:
        cols = {cast(tuple[str, int, float], k)[1] for k in keys}
        if len(cols) != 1:
            return super().fires_many(keys, data)
        ts = np.array([cast(tuple[str, int, float], k)[2] for k in keys], np.float64)
        return self._passes(self.column_score(data, cols.pop())[None, :], ts[:, None])


POLICY_REGISTRY: dict[str, ExitPolicy] = {}


def register_policy(cls: P) -> P:
    """Class decorator: add an instance of ``cls`` to :data:`POLICY_REGISTRY` as ``cls.name``
    (a design, a search space, the cost model and the exports then accept the name)."""
    if cls.name in POLICY_REGISTRY:
        raise ValueError(f"exit policy {cls.name!r} is already registered")
    POLICY_REGISTRY[cls.name] = cls()
    return cls


def get_policy(name: str) -> ExitPolicy:
    try:
        return POLICY_REGISTRY[name]
    except KeyError:
        raise unknown_name("exit policy", name, POLICY_REGISTRY) from None


def policy_names() -> tuple[str, ...]:
    """The registered policies' names, in the order they were registered."""
    return tuple(POLICY_REGISTRY)


@register_policy
class MaxSoftmax(ThresholdPolicy):
    """Exit when the calibrated max-softmax confidence is at least the threshold."""

    name = "max_softmax"
    at_least = True

    def column_score(self, data: ColumnData, col: int) -> np.ndarray:
        return np.asarray(data.confidence[col])

    def score(self, ops: Ops[T], z: T, classes: int) -> T:
        return ops.reciprocal(ops.sum(ops.exp(z)))


@register_policy
class Entropy(ThresholdPolicy):
    """Exit when the normalised entropy of the softmax is at most the threshold."""

    name = "entropy"
    at_least = False

    def column_score(self, data: ColumnData, col: int) -> np.ndarray:
        return np.asarray(data.entropy[col])

    def score(self, ops: Ops[T], z: T, classes: int) -> T:
        logp = ops.log_softmax(z)
        ent = ops.neg(ops.sum(ops.mul(ops.exp(logp), logp)))
        return ops.div_const(ent, math.log(classes), "log_c")


@register_policy
class Patience(ExitPolicy):
    """Exit when the last ``patience`` exits of the design (this one included) agree.

    Only the design's own exits count; with fewer than ``patience`` exits so far the exit
    cannot fire. ``patience = 1`` exits every sample at the first exit.
    """

    name = "patience"

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

    def first_decision(self, patience: int) -> int:
        """The first ``patience - 1`` exits cannot fire yet."""
        return max(patience - 1, 0)
