"""An image-folder dataset: ``ROOT/CLASS/*.png|jpg`` or ``ROOT/{train,val,test}/CLASS/...``.

Class names are the folder names of ``train`` (or of ``ROOT``), sorted; label ``i`` is the
``i``-th. Without split folders, train/val/test are drawn from each class by seed
(:data:`FRACTIONS`, stratified); with ``train/`` but no ``val/`` or ``test/``, the missing ones
are drawn from ``train/`` the same way. Every file is read once here to check its header
(size, mode) and hash its content; images are decoded later, a batch at a time
(:class:`~hapi_dse.data.images.FileSet`).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hapi_dse.data.images import GREY_MODES, MAX_IMAGE_SIDE, Decoder, FileSet, pillow
from hapi_dse.errors import DataError, SettingError, first_line

SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "val", "test")
# the share of each class drawn for a split that has no folder (the rest stays in train)
FRACTIONS = {"val": 0.1, "test": 0.1}


@dataclass
class _Scanned:
    files: list[Path]
    labels: np.ndarray
    sizes: list[tuple[int, int]]
    colour: bool


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """``64`` (64x64) or ``64x48`` (width x height) as ``(width, height)``."""
    if text is None:
        return None
    w, sep, h = str(text).lower().partition("x")
    try:
        size = (int(w), int(h) if sep else int(w))
    except ValueError:
        size = (0, 0)
    if min(size) < 1:
        raise SettingError(
            "image_size", f"{text!r}: expected SIZE or WIDTHxHEIGHT in pixels, e.g. 64 or 64x48"
        )
    if max(size) > MAX_IMAGE_SIDE:
        raise SettingError(
            "image_size",
            f"{text!r}: at most {MAX_IMAGE_SIDE} pixels a side (a larger image "
            "would not fit a training batch in memory), e.g. 224 or 224x224",
        )
    return size


def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images(d: Path) -> list[Path]:
    return sorted(
        p
        for p in d.rglob("*")
        if p.suffix.lower() in SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def _scan(root: Path, classes: list[str], digest: hashlib._Hash, base: Path) -> _Scanned:
    """Every image under ``root/CLASS`` for the classes found there: header checked, content
    hashed into ``digest`` (as ``relative path, sha256`` lines)."""
    image = pillow()
    files: list[Path] = []
    labels: list[int] = []
    sizes: list[tuple[int, int]] = []
    colour = False
    for d in _class_dirs(root):
        if d.name not in classes:
            raise DataError(
                f"{d}: class {d.name!r} is not in the training classes ({', '.join(classes)})"
            )
        found = _images(d)
        if not found:
            raise DataError(f"{d}: empty class folder (no {'/'.join(SUFFIXES)} files)")
        for p in found:
            try:
                raw = p.read_bytes()
                with image.open(io.BytesIO(raw)) as im:
                    size, mode = im.size, im.mode
                    im.verify()
            except (OSError, SyntaxError, ValueError, image.DecompressionBombError) as e:
                raise DataError(f"{p}: not a readable PNG/JPEG image ({first_line(e)})") from None
            digest.update(f"{p.relative_to(base).as_posix()}\0".encode())
            digest.update(hashlib.sha256(raw).digest())
            files.append(p)
            labels.append(classes.index(d.name))
            sizes.append(size)
            colour = colour or mode not in GREY_MODES
    return _Scanned(files, np.array(labels, np.int64), sizes, colour)


def draw_splits(labels: np.ndarray, fractions: dict[str, float], rng: np.random.Generator) -> dict:
    """Indices per split: ``fractions`` of each class (at least one sample when the class has
    enough for train to keep one), the rest ``train``."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("train", *fractions)}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for split, f in fractions.items():
            n = max(round(len(idx) * f), 1) if len(idx) - start > 1 else 0
            out[split].append(idx[start : start + n])
            start += n
        out["train"].append(idx[start:])
    return {k: np.sort(np.concatenate(v)) for k, v in out.items()}


def read_image_folder(
    root: Path,
    *,
    seed: int,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> tuple[dict[str, FileSet], tuple[str, ...], dict[str, object]]:
    """The splits (unnormalised), class names and the dataset's identity (path, number of
    files, sha256 over every file's path and content)."""
    subdirs = _class_dirs(root)
    has_splits = (root / "train").is_dir()
    if has_splits:
        others = [d.name for d in subdirs if d.name not in SPLITS]
        if others:
            raise DataError(
                f"{root}: has train/ and also {others[0]}/; expected either split folders "
                "(train/, optional val/ and test/) holding class folders, or class folders only"
            )
        class_root = root / "train"
    else:
        class_root = root
    classes = [d.name for d in _class_dirs(class_root)]
    if len(classes) < 2:
        what = f"a single class ({classes[0]})" if classes else "no class folders"
        raise DataError(
            f"{class_root}: {what}; expected one folder of PNG/JPEG images per class, "
            "at least two classes"
        )
    digest = hashlib.sha256()
    present = [s for s in SPLITS if (root / s).is_dir()] if has_splits else ["train"]
    scanned = {s: _scan(root / s if has_splits else root, classes, digest, root) for s in present}
    all_sizes = {sz for s in scanned.values() for sz in s.sizes}
    if image_size is None and len(all_sizes) > 1:
        ref = scanned["train"].sizes[0]
        odd = next(
            (f, sz)
            for s in scanned.values()
            for f, sz in zip(s.files, s.sizes, strict=True)
            if sz != ref
        )
        raise DataError(
            f"{odd[0]}: {odd[1][0]}x{odd[1][1]} pixels, but {scanned['train'].files[0].name} is "
            f"{ref[0]}x{ref[1]}; pass --image-size (e.g. --image-size {ref[0]}x{ref[1]}) to "
            "resize every image to one size"
        )
    if channels is None:
        channels = 3 if any(s.colour for s in scanned.values()) else 1
    w, h = image_size or scanned["train"].sizes[0]
    if max(w, h) > MAX_IMAGE_SIDE:  # only without --image-size (parse_image_size caps it)
        raise DataError(
            f"{scanned['train'].files[0]}: {w}x{h} pixels, more than {MAX_IMAGE_SIDE} a side; "
            "pass --image-size (e.g. --image-size 224) to resize every image"
        )
    decoder = Decoder(channels, image_size)
    missing = {k: v for k, v in FRACTIONS.items() if k not in scanned}
    train = scanned["train"]
    sets: dict[str, FileSet] = {}
    parts = draw_splits(train.labels, missing, np.random.default_rng(seed)) if missing else {}
    for split in SPLITS:
        if split in scanned and (split != "train" or not missing):
            s = scanned[split]
            sets[split] = FileSet(s.files, s.labels, decoder, (channels, h, w))
        else:
            idx = parts[split]
            files = [train.files[i] for i in idx.tolist()]
            sets[split] = FileSet(files, train.labels[idx], decoder, (channels, h, w))
        if len(sets[split]) == 0:
            raise DataError(
                f"{root}: no images left for the {split} split; add images or a {split}/ folder"
            )
    count = sum(len(s.files) for s in scanned.values())
    identity = {"path": str(root.resolve()), "files": count, "sha256": digest.hexdigest()}
    return sets, tuple(classes), identity
