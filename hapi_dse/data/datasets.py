"""Datasets and their fixed splits.

``fashion-mnist`` is read from the four standard IDX files, looked up in ``--data-dir``, then
``$HAPI_DATA``, then ``/usr/share/datasets/fashion-mnist`` (Debian package
``dataset-fashion-mnist``). ``digits`` is scikit-learn's bundled 8x8 digits (fast, but too easy
to show early-exit trade-offs). Splits train/val/test are fixed by seed; the search tunes on
val, test is only reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hapi_dse.data.idx import read_idx
from hapi_dse.errors import DataError, unknown_name

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FMNIST_COUNTS = {"train": 60_000, "test": 10_000}
FMNIST_VAL = 5_000
FMNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DATASETS = ("fashion-mnist", "digits")


@dataclass
class Splits:
    """Images as float32 ``(n, 1, H, W)`` normalised with train statistics; int64 labels."""

    name: str
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    classes: tuple[str, ...]
    mean: float
    std: float
    files: dict[str, Path] = field(default_factory=dict)
    seed: int = 0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x["train"].shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def find_data_dir(data_dir: str | Path | None) -> Path:
    candidates = [("--data-dir", data_dir), ("$HAPI_DATA", os.environ.get("HAPI_DATA"))]
    for origin, d in candidates:
        if d:
            p = Path(d)
            if not p.is_dir():
                raise DataError(f"{origin} {p}: no such directory")
            return p
    if SYSTEM_DIR.is_dir():
        return SYSTEM_DIR
    raise DataError(
        "Fashion-MNIST not found: install the Debian package 'dataset-fashion-mnist' "
        f"(files in {SYSTEM_DIR}), or point --data-dir / $HAPI_DATA at the IDX files"
    )


def _locate(d: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (d / name).is_file():
            return d / name
    raise DataError(f"{d}: missing {stem}(.gz); expected the four Fashion-MNIST IDX files there")


def read_fashion_mnist(data_dir: str | Path | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read and validate the raw Fashion-MNIST arrays (uint8 images, uint8 labels)."""
    d = find_data_dir(data_dir)
    files = {k: _locate(d, v) for k, v in FMNIST_FILES.items()}
    arrays = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        img, lab = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        src_i, src_l = files[f"{split}_images"], files[f"{split}_labels"]
        if img.ndim != 3 or img.shape[1:] != (28, 28) or img.dtype != np.uint8:
            raise DataError(f"{src_i}: expected uint8 images of shape (n, 28, 28), got {img.shape}")
        if lab.ndim != 1 or lab.dtype != np.uint8:
            raise DataError(f"{src_l}: expected a 1-D uint8 label file, got shape {lab.shape}")
        if len(img) != len(lab):
            raise DataError(f"{src_i}: {len(img)} images but {src_l.name} has {len(lab)} labels")
        if len(img) != FMNIST_COUNTS[split]:
            raise DataError(
                f"{src_i}: expected {FMNIST_COUNTS[split]} {split} images, got {len(img)}"
            )
        if lab.max(initial=0) >= 10:
            raise DataError(f"{src_l}: label {int(lab.max())} out of range 0..9")
    return arrays, files


def load_splits(
    name: str, *, data_dir: str | Path | None = None, seed: int = 0, limit: int | None = None
) -> Splits:
    """Load a dataset with its fixed train/val/test split.

    ``limit`` keeps a quick subset: ``limit`` training images and proportionally fewer
    validation and test images (at least 200 each), drawn with the same seed.
    """
    rng = np.random.default_rng(seed)
    if name == "fashion-mnist":
        arrays, files = read_fashion_mnist(data_dir)
        perm = rng.permutation(FMNIST_COUNTS["train"])
        val_idx, train_idx = perm[:FMNIST_VAL], perm[FMNIST_VAL:]
        x = {
            "train": arrays["train_images"][train_idx],
            "val": arrays["train_images"][val_idx],
            "test": arrays["test_images"],
        }
        y = {
            "train": arrays["train_labels"][train_idx],
            "val": arrays["train_labels"][val_idx],
            "test": arrays["test_labels"],
        }
        classes: tuple[str, ...] = FMNIST_CLASSES
        scale = 255.0
    elif name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images, labels = bunch.images.astype(np.float32), bunch.target.astype(np.uint8)
        perm = rng.permutation(len(labels))
        n_val = n_test = len(labels) // 6
        parts = {
            "test": perm[:n_test],
            "val": perm[n_test : n_test + n_val],
            "train": perm[n_test + n_val :],
        }
        x = {k: images[v] for k, v in parts.items()}
        y = {k: labels[v] for k, v in parts.items()}
        classes = tuple(str(i) for i in range(10))
        files = {}
        scale = 16.0
    else:
        raise unknown_name("dataset", name, DATASETS)

    if limit is not None:
        if limit < 1:
            raise DataError(f"--limit {limit}: expected a positive number of training images")
        n_train = len(y["train"])
        frac = min(limit / n_train, 1.0)
        for split in x:
            n = len(y[split])
            keep = limit if split == "train" else max(min(200, n), round(n * frac))
            sel = np.sort(rng.permutation(n)[: min(keep, n)])
            x[split], y[split] = x[split][sel], y[split][sel]

    xf = {k: (v.astype(np.float32) / scale)[:, None, :, :] for k, v in x.items()}
    mean = float(xf["train"].mean())
    std = float(xf["train"].std()) or 1.0
    xf = {k: (v - mean) / std for k, v in xf.items()}
    yl = {k: v.astype(np.int64) for k, v in y.items()}
    return Splits(name, xf, yl, classes, mean, std, files=files, seed=seed)
