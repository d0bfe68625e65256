"""One split of a dataset as the training loops read it: labels in memory, images fetched by
index, as float32 ``(n, C, H, W)`` normalised per channel with the training split's mean and std.

:class:`ArraySet` holds its images in memory (Fashion-MNIST, digits, ``.npz``);
:class:`FileSet` decodes image files when a batch asks for them, so an image folder is never
decoded whole (Pillow, imported when the first image is read).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.errors import DataError, first_line

#: largest image side (pixels) hapi trains on: ``--image-size`` and ``.npz`` images; at 4096
#: a side one colour image is already 192 MiB as float32 (a batch of 64: 12 GiB)
MAX_IMAGE_SIDE = 4096
#: most classes a dataset may have (a ``classes`` array, or the largest label + 1 without one)
MAX_CLASSES = 10_000

# Pillow modes with one grey channel (alpha dropped); every other mode is read as colour.
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})


class ImageSet:
    """A split: ``labels (n,)`` int64 and :meth:`take` for the images of some indices."""

    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        raise NotImplementedError

    def take(self, idx: np.ndarray) -> np.ndarray:
        """The images at ``idx``, float32 ``(len(idx), C, H, W)``, normalised."""
        raise NotImplementedError

    def subset(self, idx: np.ndarray) -> ImageSet:
        """The samples at ``idx``, in that order."""
        raise NotImplementedError

    def normalised(self, mean: np.ndarray, std: np.ndarray) -> ImageSet:
        """This split with ``(x - mean) / std`` per channel applied to its images."""
        raise NotImplementedError

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Images and labels in order, ``size`` at a time."""
        for i in range(0, len(self), size):
            idx = np.arange(i, min(i + size, len(self)))
            yield self.take(idx), self.labels[idx]

    def all(self) -> np.ndarray:
        """Every image at once (for a split small enough to hold in memory)."""
        return self.take(np.arange(len(self)))


def _per_channel(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32).reshape(1, -1, 1, 1)


@dataclass
class ArraySet(ImageSet):
    """Images held in memory, float32 ``(n, C, H, W)``; with ``mean`` and ``std``, normalised
    when :meth:`take` reads them (the same float32 operations on the same values as
    normalising the whole array at once, so the same bits; a command that reads 512 images
    of a split does not normalise all 70,000)."""

    x: np.ndarray
    labels: np.ndarray
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def take(self, idx: np.ndarray) -> np.ndarray:
        x = self.x[idx]
        if self.mean is not None and self.std is not None:
            x = (x - _per_channel(self.mean)) / _per_channel(self.std)
        return x

    def subset(self, idx: np.ndarray) -> ArraySet:
        return ArraySet(self.x[idx], self.labels[idx], self.mean, self.std)

    def normalised(self, mean: np.ndarray, std: np.ndarray) -> ArraySet:
        if self.mean is not None or self.std is not None:  # normalised already: apply both
            return ArraySet(self.all(), self.labels, mean, std)
        return ArraySet(self.x, self.labels, mean, std)


def pillow() -> Any:
    """``PIL.Image``, or a one-line error naming the package to install."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError(
            "reading PNG/JPEG images needs the Python package 'Pillow' (pip install Pillow)"
        ) from None
    return Image


@dataclass(frozen=True)
class Decoder:
    """How a file becomes an image: its mode (``channels``), an optional resize to
    ``size = (width, height)`` (bilinear), pixels scaled to 0..1."""

    channels: int
    size: tuple[int, int] | None = None

    def decode(self, path: Path) -> np.ndarray:
        """float32 ``(C, H, W)`` in 0..1; an unreadable file is a :class:`DataError`."""
        image = pillow()
        try:
            with image.open(path) as im:
                im = im.convert("L" if self.channels == 1 else "RGB")
                if self.size is not None and im.size != self.size:
                    im = im.resize(self.size, image.Resampling.BILINEAR)
                pixels = np.asarray(im, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError, image.DecompressionBombError) as e:
            raise DataError(f"{path}: not a readable PNG/JPEG image ({first_line(e)})") from None
        x = pixels.astype(np.float32) / np.float32(255.0)
        return x[None] if x.ndim == 2 else x.transpose(2, 0, 1)


@dataclass
class FileSet(ImageSet):
    """Image files decoded per batch, all of one ``shape``."""

    files: list[Path]
    labels: np.ndarray
    decoder: Decoder
    image_shape: tuple[int, int, int]
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.image_shape

    def take(self, idx: np.ndarray) -> np.ndarray:
        x = np.empty((len(idx), *self.image_shape), np.float32)
        for row, i in enumerate(np.asarray(idx).tolist()):
            img = self.decoder.decode(self.files[i])
            if img.shape != self.image_shape:  # a file changed since it was scanned
                raise DataError(
                    f"{self.files[i]}: decoded to {img.shape}, expected {self.image_shape}"
                )
            x[row] = img
        if self.mean is not None and self.std is not None:
            x = (x - _per_channel(self.mean)) / _per_channel(self.std)
        return x

    def subset(self, idx: np.ndarray) -> FileSet:
        files = [self.files[i] for i in np.asarray(idx).tolist()]
        return FileSet(files, self.labels[idx], self.decoder, self.image_shape, self.mean, self.std)

    def normalised(self, mean: np.ndarray, std: np.ndarray) -> FileSet:
        return FileSet(self.files, self.labels, self.decoder, self.image_shape, mean, std)


def channel_stats(s: ImageSet, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (float64) of the images of ``s``: all of them when they are in
    memory or at most ``limit``, else ``limit`` drawn by ``seed``. A constant channel gets
    std 1."""
    if isinstance(s, ArraySet):
        x = s.x if s.mean is None and s.std is None else s.all()  # in memory: all of it
    elif len(s) <= limit:
        x = s.all()
    else:
        x = s.take(np.sort(np.random.default_rng(seed).choice(len(s), limit, replace=False)))
    if x.shape[1] == 1:  # the whole array at once: Fashion-MNIST's and digits' statistics
        mean = np.array([float(x.mean())])
        std = np.array([float(x.std())])
    else:
        mean = np.array([float(x[:, c].mean()) for c in range(x.shape[1])])
        std = np.array([float(x[:, c].std()) for c in range(x.shape[1])])
    std[std == 0] = 1.0
    return mean, std
