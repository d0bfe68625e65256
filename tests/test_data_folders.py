"""Image-folder datasets: both layouts, resizing, channels, streaming, and one-line errors,
on small PNG/JPEG files written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hapi_dse.data import load_splits
from hapi_dse.data.folders import FRACTIONS, parse_image_size
from hapi_dse.data.images import FileSet
from hapi_dse.errors import DataError, UsageError

PIL = pytest.importorskip("PIL.Image")


def write_image(
    path: Path, size: tuple[int, int] = (12, 10), mode: str = "RGB", value: int = 0
) -> Path:
    """A ``size = (width, height)`` image whose pixels depend on ``value`` and position."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    bands = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    grid = (np.arange(h * w * bands).reshape(h, w, bands) * 7 + value * 37) % 256
    pixels = grid.astype(np.uint8)
    PIL.fromarray(pixels[..., 0] if bands == 1 else pixels, mode).save(path)
    return path


def make_folder(
    root: Path,
    classes: dict[str, int],
    *,
    size: tuple[int, int] = (12, 10),
    mode: str = "RGB",
    suffix: str = ".png",
) -> Path:
    """``root/CLASS/i.png`` with ``classes[CLASS]`` images per class."""
    for k, (name, n) in enumerate(classes.items()):
        for i in range(n):
            write_image(root / name / f"{i:03d}{suffix}", size, mode, value=10 * k + i)
    return root


def test_class_folders_split_stratified_by_seed(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", {"cat": 20, "dog": 10})
    a = load_splits(str(root), seed=1)
    b = load_splits(str(root), seed=1)
    c = load_splits(str(root), seed=2)
    assert a.classes == ("cat", "dog") and a.input_shape == (3, 10, 12)
    sizes = {k: len(s) for k, s in a.sets.items()}
    n_val = round(20 * FRACTIONS["val"]) + round(10 * FRACTIONS["val"])
    assert sizes == {"train": 30 - 2 * n_val, "val": n_val, "test": n_val}
    for split in ("val", "test"):  # every class in every split (stratified)
        assert set(a.sets[split].labels.tolist()) == {0, 1}
    files = {k: set(s.files) for k, s in a.sets.items() if isinstance(s, FileSet)}
    assert not files["train"] & files["val"] and not files["val"] & files["test"]
    assert files == {k: set(s.files) for k, s in b.sets.items() if isinstance(s, FileSet)}
    assert files["test"] != {f for f in c.sets["test"].files}  # type: ignore[attr-defined]
    # normalised with the train split's per-channel statistics
    x = a.sets["train"].all()
    assert len(a.mean) == len(a.std) == 3
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1.0, atol=1e-4)


def test_split_folders_keep_their_images(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_folder(root / "train", {"a": 6, "b": 5})
    make_folder(root / "test", {"a": 2, "b": 3})
    data = load_splits(str(root), seed=0)
    test = data.sets["test"]
    assert isinstance(test, FileSet)
    assert all(f.parent.parent.name == "test" for f in test.files)
    assert test.labels.tolist() == [0, 0, 1, 1, 1]
    assert len(data.sets["val"]) == 2  # drawn from train/: one per class
    assert len(data.sets["train"]) == 9
    assert data.identity is not None and data.identity["files"] == 16


def test_identity_hashes_content(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", {"a": 3, "b": 3})
    first = load_splits(str(root)).identity
    write_image(root / "a" / "001.png", value=99)
    second = load_splits(str(root)).identity
    assert first is not None and second is not None
    assert first["files"] == second["files"] == 6
    assert first["sha256"] != second["sha256"]


def test_mixed_sizes_need_resize(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", {"a": 3, "b": 3})
    odd = write_image(root / "b" / "zz.png", size=(20, 16))
    with pytest.raises(DataError, match=f"{odd}: 20x16 pixels.*--image-size"):
        load_splits(str(root))
    data = load_splits(str(root), image_size="8x6")
    assert data.input_shape == (3, 6, 8)
    assert data.sets["train"].all().shape[1:] == (3, 6, 8)


def test_channels_grey_rgba_and_jpeg(tmp_path: Path) -> None:
    grey = make_folder(tmp_path / "grey", {"a": 3, "b": 3}, mode="L", suffix=".jpg")
    assert load_splits(str(grey)).input_shape == (1, 10, 12)
    assert load_splits(str(grey), channels=3).input_shape == (3, 10, 12)
    rgba = make_folder(tmp_path / "rgba", {"a": 3, "b": 3}, mode="RGBA")
    data = load_splits(str(rgba), image_size="5")
    assert data.input_shape == (3, 5, 5)
    assert load_splits(str(rgba), channels=1).input_shape == (1, 10, 12)


def test_images_are_decoded_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_folder(tmp_path / "ds", {"a": 10, "b": 10})
    data = load_splits(str(root), seed=0)
    decoded: list[Path] = []
    train = data.sets["train"]
    assert isinstance(train, FileSet)
    real = train.decoder.decode
    monkeypatch.setattr(type(train.decoder), "decode", lambda self, p: decoded.append(p) or real(p))
    x = train.take(np.array([3, 0]))
    assert decoded == [train.files[3], train.files[0]] and x.shape == (2, 3, 10, 12)
    batches = list(train.batches(5))
    assert [len(y) for _, y in batches] == [5, 5, 5, 1]


def test_limit_keeps_a_subset(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", {"a": 15, "b": 15})
    data = load_splits(str(root), seed=0, limit=10)
    assert len(data.sets["train"]) == 10


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda r: make_folder(r, {"only": 3}), "a single class \\(only\\)"),
        (lambda r: r.mkdir(), "no class folders"),
        (
            lambda r: (make_folder(r, {"a": 3, "b": 3}), (r / "c").mkdir()),
            "c: empty class folder",
        ),
        (
            lambda r: (make_folder(r, {"a": 3, "b": 3}), (r / "b" / "x.png").write_bytes(b"no")),
            "x.png: not a readable PNG/JPEG image",
        ),
        (
            lambda r: (
                make_folder(r / "train", {"a": 3, "b": 3}),
                make_folder(r / "val", {"z": 1}),
            ),
            "class 'z' is not in the training classes",
        ),
        (
            lambda r: (
                make_folder(r / "train", {"a": 3, "b": 3}),
                make_folder(r / "misc", {"a": 1}),
            ),
            "has train/ and also misc/",
        ),
    ],
    ids=["single-class", "no-classes", "empty-class", "corrupt", "val-class", "stray-folder"],
)
def test_folder_errors(tmp_path: Path, build: object, message: str) -> None:
    root = tmp_path / "ds"
    build(root)  # type: ignore[operator]
    with pytest.raises(DataError, match=message):
        load_splits(str(root))


def test_truncated_image_fails_when_decoded(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", {"a": 3, "b": 3}, suffix=".jpg")
    data = load_splits(str(root))
    train = data.sets["train"]
    assert isinstance(train, FileSet)
    train.files[0].write_bytes(train.files[0].read_bytes()[:40])
    with pytest.raises(DataError, match=f"{train.files[0]}: not a readable"):
        train.take(np.array([0]))


def test_image_size_parsing() -> None:
    assert parse_image_size("64") == (64, 64)
    assert parse_image_size("64x48") == (64, 48)
    for bad in ("0", "x", "64x", "-3x4", "big"):
        with pytest.raises(UsageError, match="expected SIZE or WIDTHxHEIGHT"):
            parse_image_size(bad)


def test_unknown_dataset_and_options_for_folders(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown dataset 'mnist'.*image folder"):
        load_splits("mnist")
    with pytest.raises(DataError, match="no such directory or .npz file"):
        load_splits(str(tmp_path / "missing.npz"))
    with pytest.raises(UsageError, match="apply to image folders"):
        load_splits("digits", image_size="8")


def test_cli_bad_folder_is_one_line(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    root = make_folder(tmp_path / "ds", {"only": 3})
    res = run_cli("train", "--dataset", root, "--out", tmp_path / "run", "--epochs", "1")
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "a single class" in res.stderr
    assert not (tmp_path / "run").exists()
    res = run_cli("train", "--dataset", root, "--channels", "2", "--out", tmp_path / "run")
    assert res.exit_code == 2 and "--channels" in res.stderr
