"""A dataset in one ``.npz`` file (read with ``allow_pickle=False``).

Keys: ``x`` and ``y`` (or ``x_train`` and ``y_train``), optionally ``x_val``/``y_val`` and
``x_test``/``y_test``, and ``classes`` (a string array; default ``0``, ``1``...). Images are
``(n, H, W)``, ``(n, H, W, C)`` or ``(n, C, H, W)`` with 1, 3 or 4 channels, uint8 (scaled
by 1/255) or float; labels are integers ``0..classes-1``. Missing val or test splits are
drawn from train by seed as for image folders (:data:`~hapi_dse.data.folders.FRACTIONS`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hapi_dse.data.folders import FRACTIONS, draw_splits
from hapi_dse.data.images import MAX_CLASSES, MAX_IMAGE_SIDE, ArraySet
from hapi_dse.errors import DataError
from hapi_dse.provenance import sha256_file
from hapi_dse.readers import check_memory
from hapi_dse.readers import read_npz as read_arrays


def _images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """float32 ``(n, C, H, W)`` from any accepted layout."""
    if x.dtype.kind not in "uif" or (x.dtype.kind == "f" and not np.isfinite(x).all()):
        raise DataError(f"{path}: {key} must hold finite numbers, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4 or x.shape[1] not in (1, 3, 4):
        raise DataError(
            f"{path}: {key} has shape {x.shape}; expected (n, H, W), (n, H, W, C) or "
            "(n, C, H, W) with C = 1, 3 or 4"
        )
    if min(x.shape[2:]) < 1 or max(x.shape[2:]) > MAX_IMAGE_SIDE:
        raise DataError(
            f"{path}: {key} holds images of {x.shape[2]}x{x.shape[3]} pixels; each side must "
            f"be 1..{MAX_IMAGE_SIDE}"
        )
    if x.shape[1] == 4:
        x = x[:, :3]  # RGBA -> RGB
    need = x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3] * 4
    check_memory(need, f"{path}: {key} needs", as_=" as float32", error=DataError)
    scale = np.float32(255.0) if x.dtype == np.uint8 else np.float32(1.0)
    return np.ascontiguousarray(x.astype(np.float32) / scale)


def read_npz(
    path: Path, *, seed: int
) -> tuple[dict[str, ArraySet], tuple[str, ...], dict[str, object]]:
    """The splits (unnormalised), class names and identity (path, sha256) of ``path``."""
    # every member's header is checked (shape, dtype, size in the archive) before allocating
    arrays = read_arrays(path, error=DataError)
    train_key = "" if "x" in arrays else "_train"
    found = {}
    for split, suffix in (("train", train_key), ("val", "_val"), ("test", "_test")):
        xk, yk = f"x{suffix}", f"y{suffix}"
        if xk not in arrays and yk not in arrays and split != "train":
            continue
        for k in (xk, yk):
            if k not in arrays:
                raise DataError(
                    f"{path}: no array {k!r} (has {', '.join(sorted(arrays)) or 'none'}); "
                    "expected x and y, optionally x_val/y_val and x_test/y_test"
                )
        x, y = _images(path, xk, arrays[xk]), arrays[yk]
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise DataError(f"{path}: {yk} must be 1-D integer labels, got {y.dtype} {y.shape}")
        if len(x) != len(y):
            raise DataError(f"{path}: {xk} has {len(x)} images but {yk} has {len(y)} labels")
        if len(y) == 0:
            raise DataError(f"{path}: {xk} is empty")
        found[split] = ArraySet(x, y.astype(np.int64))
    shapes = {s.shape for s in found.values()}
    if len(shapes) > 1:
        raise DataError(f"{path}: the splits' images differ in shape: {sorted(shapes)}")
    if "classes" in arrays:
        names = arrays["classes"]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(f"{path}: classes must be a 1-D string array, got {names.dtype}")
        if len(names) > MAX_CLASSES:
            raise DataError(
                f"{path}: classes holds {len(names)} names; hapi trains at most {MAX_CLASSES} "
                "classes"
            )
        classes = tuple(str(c) for c in names.tolist())
    else:  # the classes are 0..largest label: refuse a label that implies absurdly many
        top = int(found["train"].labels.max())
        if top >= MAX_CLASSES:
            raise DataError(
                f"{path}: label {top} in the train split implies {top + 1} classes (without "
                f"a 'classes' array, labels are 0..classes-1); hapi trains at most "
                f"{MAX_CLASSES} classes: number the labels from 0, or add a 'classes' array"
            )
        classes = tuple(str(i) for i in range(top + 1))
    for split, s in found.items():
        bad = s.labels[(s.labels < 0) | (s.labels >= len(classes))]
        if len(bad):
            raise DataError(
                f"{path}: label {int(bad[0])} in the {split} split is out of range "
                f"0..{len(classes) - 1} ({len(classes)} classes)"
            )
    if len(np.unique(found["train"].labels)) < 2:
        raise DataError(f"{path}: the training labels hold a single class; expected at least two")
    missing = {k: v for k, v in FRACTIONS.items() if k not in found}
    if missing:
        parts = draw_splits(found["train"].labels, missing, np.random.default_rng(seed))
        train = found["train"]
        found.update({k: train.subset(v) for k, v in parts.items()})
    for split in ("train", "val", "test"):
        if len(found[split]) == 0:
            raise DataError(f"{path}: no images left for the {split} split; add x_{split}")
    identity = {"path": str(path.resolve()), "files": 1, "sha256": sha256_file(path)}
    return {k: found[k] for k in ("train", "val", "test")}, classes, identity
