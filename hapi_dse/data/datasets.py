"""Datasets and their fixed splits.

``fashion-mnist`` is read from the four standard IDX files, looked up in ``--data-dir``, then
``$HAPI_DATA``, then ``/usr/share/datasets/fashion-mnist`` (Debian package
``dataset-fashion-mnist``). ``digits`` is scikit-learn's bundled 8x8 digits (fast, but too easy
to show early-exit trade-offs). Any other ``--dataset`` is an image folder
(:mod:`~hapi_dse.data.folders`) or a ``.npz`` file (:mod:`~hapi_dse.data.npz`). Splits
train/val/test are fixed by seed; the search tunes on val, test is only reported. Images are
normalised per channel with the training split's mean and std.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hapi_dse.data.folders import parse_image_size, read_image_folder
from hapi_dse.data.idx import read_idx
from hapi_dse.data.images import ArraySet, ImageSet, channel_stats
from hapi_dse.data.npz import read_npz
from hapi_dse.errors import DataError, SettingError, UsageError

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
# the training images the per-channel mean and std are computed on, at most (drawn by seed)
STATS_SAMPLE = 20_000


@dataclass
class Splits:
    """The train/val/test splits, each an :class:`~hapi_dse.data.images.ImageSet` whose images
    come normalised per channel with the training split's ``mean`` and ``std``."""

    name: str
    sets: dict[str, ImageSet]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: dict[str, Path] = field(default_factory=dict)
    seed: int = 0
    identity: dict[str, object] | None = None  # a folder's or .npz's path, files, sha256

    @property
    def y(self) -> dict[str, np.ndarray]:
        return {k: s.labels for k, s in self.sets.items()}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.sets["train"].shape

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def find_data_dir(data_dir: str | Path | None) -> Path:
    for origin, d in (("data_dir", data_dir), ("$HAPI_DATA", os.environ.get("HAPI_DATA"))):
        if d:
            p = Path(d)
            if not p.is_dir():
                if origin == "data_dir":  # a setting: the CLI names it --data-dir
                    raise SettingError(origin, f"{p}: no such directory")
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
    name: str,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    image_size: str | None = None,
    channels: int | None = None,
) -> Splits:
    """Load a dataset with its fixed train/val/test split.

    ``name`` is a built-in dataset (:data:`DATASETS`), an image folder or a ``.npz`` file
    (``image_size`` and ``channels`` apply to image folders). ``limit`` keeps a quick subset:
    ``limit`` training images and proportionally fewer validation and test images (at least
    200 each), drawn with the same seed.
    """
    rng = np.random.default_rng(seed)
    path = Path(name)
    if (channels is not None or image_size is not None) and not path.is_dir():
        raise SettingError(
            "image_size",
            f"and {{channels}} apply to image folders, not to {name}",
            ("channels",),
        )
    files: dict[str, Path] = {}
    identity = None
    sets: dict[str, ImageSet]
    if name == "fashion-mnist":
        arrays, files = read_fashion_mnist(data_dir)
        perm = rng.permutation(FMNIST_COUNTS["train"])
        val_idx, train_idx = perm[:FMNIST_VAL], perm[FMNIST_VAL:]
        sets = {
            "train": _raw(arrays["train_images"][train_idx], arrays["train_labels"][train_idx]),
            "val": _raw(arrays["train_images"][val_idx], arrays["train_labels"][val_idx]),
            "test": _raw(arrays["test_images"], arrays["test_labels"]),
        }
        classes: tuple[str, ...] = FMNIST_CLASSES
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
        sets = {k: _raw(images[v], labels[v], scale=16.0) for k, v in parts.items()}
        classes = tuple(str(i) for i in range(10))
    elif path.is_dir():
        sets_f, classes, identity = read_image_folder(
            path, seed=seed, image_size=parse_image_size(image_size), channels=channels
        )
        sets = dict(sets_f)
    elif path.suffix == ".npz" and path.is_file():
        sets_a, classes, identity = read_npz(path, seed=seed)
        sets = dict(sets_a)
    elif path.suffix == ".npz" or os.sep in name or "/" in name:
        raise DataError(f"--dataset {name}: no such directory or .npz file")
    else:
        raise UsageError(
            f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}, an image "
            "folder (one subfolder per class) or a .npz file"
        )

    if limit is not None:
        if limit < 1:
            raise SettingError("limit", f"{limit}: expected a positive number of training images")
        n_train = len(sets["train"])
        frac = min(limit / n_train, 1.0)
        for split, s in sets.items():
            n = len(s)
            keep = limit if split == "train" else max(min(200, n), round(n * frac))
            sets[split] = s.subset(np.sort(rng.permutation(n)[: min(keep, n)]))

    mean, std = channel_stats(sets["train"], STATS_SAMPLE, seed)
    normed = {k: s.normalised(mean, std) for k, s in sets.items()}
    order = {k: normed[k] for k in ("train", "val", "test")}
    return Splits(
        str(path.resolve()) if identity else name,
        order,
        classes,
        tuple(float(m) for m in mean),
        tuple(float(s) for s in std),
        files=files,
        seed=seed,
        identity=identity,
    )


def _raw(images: np.ndarray, labels: np.ndarray, scale: float = 255.0) -> ArraySet:
    """An in-memory split: float32 ``(n, 1, H, W)`` scaled by ``1 / scale``, int64 labels."""
    x = (images.astype(np.float32) / np.float32(scale))[:, None, :, :]
    return ArraySet(x, labels.astype(np.int64))
