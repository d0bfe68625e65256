"""The run directory written by ``hapi train`` and read by every later stage (no torch here).

Layout (contract, DESIGN 2.1): ``model.json``, ``weights.pt``, ``exits_val.npz``,
``exits_test.npz``, ``train.json``, ``flops.csv``.
"""

from __future__ import annotations

import csv
import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.errors import ArtefactError
from hapi_dse.provenance import OUTPUT_KINDS

RUN_FILES: tuple[str, ...] = OUTPUT_KINDS["run"]["names"]  # what 'hapi train' writes
STAT_KEYS = ("labels", "confidence", "entropy", "prediction", "position", "head")
EXAMPLES_DIR = Path(__file__).parent / "examples"
DEFAULT_EXAMPLE = "fashion-mnist"

# What the command line allowed model.json to run (see allow_backbone_factory).
_ALLOWED_FACTORIES: set[str] = set()
_TRUST_RUN_CODE = False


@contextmanager
def allow_backbone_factory(spec: str | None = None, *, trust: bool = False) -> Iterator[None]:
    """While open, let :meth:`RunDir.load_model` build the user factory ``spec``
    (``package.module:factory``, named on the command line), or any factory with ``trust``
    (``--trust-run-code``). Otherwise a run directory is data: only registered backbones are
    built from its model.json (DESIGN 3: never execute code named by a file it reads).
    """
    global _TRUST_RUN_CODE
    before = (set(_ALLOWED_FACTORIES), _TRUST_RUN_CODE)
    if spec is not None:
        _ALLOWED_FACTORIES.add(spec)
    _TRUST_RUN_CODE = _TRUST_RUN_CODE or trust
    try:
        yield
    finally:
        _ALLOWED_FACTORIES.clear()
        _ALLOWED_FACTORIES.update(before[0])
        _TRUST_RUN_CODE = before[1]


_PLAIN = (bool, int, float, str, type(None))


def _plain_value(v: Any) -> bool:
    if isinstance(v, list):
        return all(_plain_value(x) for x in v)
    return isinstance(v, _PLAIN)


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
        from hapi_dse.provenance import atomic_path

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
    def load(cls, path: str | Path) -> ExitStats:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in STAT_KEYS if k not in z.files]
                if missing:
                    raise ArtefactError(f"{path}: missing arrays {missing}; expected {STAT_KEYS}")
                arrays = {k: z[k] for k in STAT_KEYS}
        except FileNotFoundError:
            raise ArtefactError(f"{path}: file not found") from None
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise ArtefactError(f"{path}: not a readable .npz file ({e})") from None
        stats = cls(**arrays)
        n, k = stats.n, stats.k
        for name in ("confidence", "entropy", "prediction"):
            if arrays[name].shape != (n, k):
                raise ArtefactError(
                    f"{path}: {name} has shape {arrays[name].shape}, expected ({n}, {k})"
                )
        if stats.head.shape != (k,) or stats.head.dtype.kind != "U":
            raise ArtefactError(f"{path}: head must be ({k},) strings")
        return stats


class RunDir:
    """A run directory, validated on open; torch is needed only to build the model."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ArtefactError(f"{self.path}: no such run directory (from 'hapi train --out')")
        missing = [
            f
            for f in ("model.json", "exits_val.npz", "exits_test.npz")
            if not (self.path / f).is_file()
        ]
        if missing:
            raise ArtefactError(f"{self.path}: not a run directory, missing {', '.join(missing)}")

    @cached_property
    def model(self) -> dict[str, Any]:
        p = self.path / "model.json"
        try:
            data: dict[str, Any] = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtefactError(f"{p}: not valid JSON ({e})") from None
        for key in ("model_id", "arch", "exits", "columns"):
            if key not in data:
                raise ArtefactError(f"{p}: missing key {key!r}")
        return data

    @property
    def model_id(self) -> str:
        return str(self.model["model_id"])

    @property
    def num_blocks(self) -> int:
        return len(self.model["exits"])

    def stats(self, split: str) -> ExitStats:
        if split not in ("val", "test"):
            raise ValueError(split)
        return ExitStats.load(self.path / f"exits_{split}.npz")

    def flops(self) -> list[dict[str, Any]]:
        p = self.path / "flops.csv"
        if not p.is_file():
            raise ArtefactError(f"{p}: file not found")
        with open(p, newline="") as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            r["position"] = int(r["position"])
            r["flops"] = int(r["flops"])
            r["params"] = int(r["params"])
        return rows

    def check_arch(self, trust_code: bool = False, backbone: str | None = None) -> None:
        """Refuse a model.json whose backbone is code (``package.module:factory``) unless
        ``backbone`` names that factory, ``trust_code`` is set, or the command line allowed it
        (:func:`allow_backbone_factory`); ``backbone_kwargs`` must be plain JSON data."""
        p = self.path / "model.json"
        arch = self.model["arch"]
        if not isinstance(arch, dict):
            raise ArtefactError(f"{p}: 'arch' must be an object")
        name = arch.get("backbone")
        if not isinstance(name, str):
            raise ArtefactError(f"{p}: arch.backbone must be a backbone name, got {name!r}")
        trusted = trust_code or _TRUST_RUN_CODE or name in _ALLOWED_FACTORIES
        if ":" in name and name != backbone and not trusted:
            from hapi_dse.models.backbones import BACKBONES

            raise ArtefactError(
                f"{p} names backbone {name!r}, which is code, not a registered backbone "
                f"({', '.join(BACKBONES.names())}): pass --backbone {name} to run it, "
                "or --trust-run-code"
            )
        kw = arch.get("backbone_kwargs", {})
        if not isinstance(kw, dict) or not all(
            isinstance(k, str) and _plain_value(v) for k, v in kw.items()
        ):
            raise ArtefactError(
                f"{p}: arch.backbone_kwargs must map names to numbers, strings, booleans "
                f"or lists of them, got {json.dumps(kw)[:80]}"
            )

    def load_model(self, trust_code: bool = False, backbone: str | None = None) -> Any:
        """The trained :class:`~hapi_dse.models.early_exit.EarlyExitNet`, in eval mode.

        Builds only a registered backbone unless code was allowed (see :meth:`check_arch`).
        """
        import torch

        from hapi_dse.models.early_exit import build

        self.check_arch(trust_code, backbone)
        net = build(self.model["arch"])
        p = self.path / "weights.pt"
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except FileNotFoundError:
            raise ArtefactError(f"{p}: file not found") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ArtefactError(f"{p}: cannot load weights ({first})") from None
        return net.eval()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def bundled_example(name: str = DEFAULT_EXAMPLE) -> Path:
    return EXAMPLES_DIR / name


def resolve_run(model: str | Path | None) -> RunDir:
    """``--model`` or, when omitted, the bundled example shipped with the package."""
    if model is None:
        p = bundled_example()
        if not (p / "model.json").is_file():
            raise ArtefactError(
                f"the bundled example is missing from {p}; rebuild it with 'make example' "
                "or pass --model RUN_DIR"
            )
        return RunDir(p)
    return RunDir(model)
