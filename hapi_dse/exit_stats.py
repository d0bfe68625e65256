"""Per-sample exit statistics of one split (``exits_val.npz``, ``exits_test.npz``): the
contract between training and everything after it (DESIGN 2.1), checked on load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hapi_dse.errors import ArtefactError
from hapi_dse.readers import read_npz

STAT_KEYS = ("labels", "confidence", "entropy", "prediction", "position", "head")


@dataclass(frozen=True)
class ExitStats:
    """Per-sample statistics of every exit column on one split (the ``.npz`` contract)."""

    labels: np.ndarray  # (n,) int
    confidence: np.ndarray  # (n, k) float32, calibrated max softmax
    entropy: np.ndarray  # (n, k) float32, normalised to 0..1
    prediction: np.ndarray  # (n, k) int
    position: np.ndarray  # (k,) int, block index after which the head sits
    head: np.ndarray  # (k,) str

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def k(self) -> int:
        return int(self.position.shape[0])

    @property
    def correct(self) -> np.ndarray:
        return self.prediction == self.labels[:, None]

    def column(self, position: int, head: str) -> int:
        hits = np.flatnonzero((self.position == position) & (self.head == head))
        if hits.size == 0:
            raise KeyError((position, head))
        return int(hits[0])

    def save(self, path: str | Path) -> None:
        from hapi_dse.atomic import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                labels=self.labels,
                confidence=self.confidence,
                entropy=self.entropy,
                prediction=self.prediction,
                position=self.position,
                head=self.head.astype("U16"),
            )

    @classmethod
    def load(cls, path: str | Path, num_classes: int | None = None) -> ExitStats:
        """Read and validate a ``.npz`` of the contract (DESIGN 2.1): array names, dtypes,
        shapes, at least one sample and one column, finite confidences and entropies in
        0..1, labels and predictions in ``0..num_classes-1`` (or >= 0 when not given), and
        the final classifier as the last column. The error names the file, the array, the
        rule and the first bad value."""
        path = Path(path)
        # headers checked before anything is allocated; no pickle
        arrays = read_npz(path, keys=STAT_KEYS, fix="rerun 'hapi train'")
        missing = [k for k in STAT_KEYS if k not in arrays]
        if missing:
            raise ArtefactError(f"{path}: missing arrays {missing}; expected {STAT_KEYS}")
        _check_stats(path, arrays, num_classes)
        return cls(**arrays)


_STAT_KINDS = {
    "labels": ("iu", "integers"),
    "confidence": ("f", "floats"),
    "entropy": ("f", "floats"),
    "prediction": ("iu", "integers"),
    "position": ("iu", "integers"),
    "head": ("U", "strings"),
}
_FIX = "rerun 'hapi train', or write the arrays as DESIGN 2.1 says"


def _check_stats(path: Path, a: dict[str, np.ndarray], num_classes: int | None) -> None:
    """The checks of :meth:`ExitStats.load` (see there); raises :class:`ArtefactError`."""

    def fail(msg: str) -> ArtefactError:
        return ArtefactError(f"{path}: {msg}; {_FIX}")

    for name, (kinds, what) in _STAT_KINDS.items():
        if a[name].dtype.kind not in kinds:
            raise fail(f"{name} must hold {what}, but its dtype is {a[name].dtype}")
    for name in ("labels", "position", "head"):
        if a[name].ndim != 1:
            raise fail(f"{name} must be 1-D, but has shape {a[name].shape}")
    n, k = a["labels"].shape[0], a["position"].shape[0]
    if n == 0:
        raise fail("labels is empty: the split has no samples")
    if k == 0:
        raise fail("position is empty: there are no exit columns")
    for name in ("confidence", "entropy", "prediction"):
        if a[name].shape != (n, k):
            raise fail(f"{name} has shape {a[name].shape}, expected ({n}, {k}) (samples, columns)")
    if a["head"].shape != (k,):
        raise fail(f"head has shape {a['head'].shape}, expected ({k},)")
    for name in ("confidence", "entropy"):
        v = a[name]
        bad = ~np.isfinite(v) | (v < 0.0) | (v > 1.0)
        if bad.any():
            i, j = (int(x[0]) for x in np.nonzero(bad))
            raise fail(
                f"{name}[{i}, {j}] is {float(v[i, j])}: every {name} must be a finite number "
                "in 0..1"
            )
    top = f"0..{num_classes - 1}" if num_classes else ">= 0"
    for name in ("labels", "prediction"):
        v = a[name]
        bad = (v < 0) | (v >= num_classes) if num_classes else (v < 0)
        if bad.any():
            at = tuple(int(x[0]) for x in np.nonzero(bad))
            idx = ", ".join(map(str, at))
            raise fail(f"{name}[{idx}] is {int(v[at])}: class indices must be {top}")
    if (a["position"] < 0).any():
        raise fail(f"position holds {int(a['position'].min())}: block indices must be >= 0")
    finals = np.flatnonzero(a["head"] == "final")
    if finals.tolist() != [k - 1]:
        raise fail(
            f"the final classifier (head 'final') must be the last column and only there, "
            f"but it is at column(s) {finals.tolist()} of {k}"
        )
