"""The IDX reader and the Fashion-MNIST loader, on small files written by the tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from hapi_dse.data import load_splits, read_idx, write_idx
from hapi_dse.data.datasets import FMNIST_FILES
from hapi_dse.errors import DataError


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_roundtrip(tmp_path: Path, suffix: str) -> None:
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    path = tmp_path / f"images{suffix}"
    write_idx(path, images)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (7, 28, 28)
    np.testing.assert_array_equal(out, images)


def test_idx_non_uint8_roundtrip(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    write_idx(tmp_path / "v.idx", values)
    np.testing.assert_array_equal(read_idx(tmp_path / "v.idx"), values)


def test_idx_truncated_payload(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    write_idx(path, np.arange(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated.*header says shape \\(10,\\)"):
        read_idx(path)


def test_idx_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "images"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(path)


def test_idx_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "images"
    path.write_bytes(b"\x50\x4b\x03\x04" + bytes(64))
    with pytest.raises(DataError, match="bad IDX magic 504b0304"):
        read_idx(path)


def test_idx_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "images.gz"
    data = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x04" + bytes(4))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt"):
        read_idx(path)


def _fake_fmnist(d: Path, n_train: int, n_test: int, max_label: int = 9) -> None:
    """Raw (uncompressed) IDX files; each image is filled with its index so rows differ."""
    rng = np.random.default_rng(1)
    for split, n in (("train", n_train), ("test", n_test)):
        images = np.broadcast_to((np.arange(n) % 251).astype(np.uint8)[:, None, None], (n, 28, 28))
        write_idx(d / FMNIST_FILES[split + "_images"], np.ascontiguousarray(images))
        write_idx(
            d / FMNIST_FILES[split + "_labels"], rng.integers(0, max_label + 1, n, dtype=np.uint8)
        )


def test_fmnist_wrong_counts(tmp_path: Path) -> None:
    _fake_fmnist(tmp_path, 100, 20)
    with pytest.raises(DataError, match="expected 60000 train images, got 100"):
        load_splits("fashion-mnist", data_dir=tmp_path)


def test_fmnist_label_out_of_range(tmp_path: Path) -> None:
    _fake_fmnist(tmp_path, 60_000, 10_000, max_label=12)
    with pytest.raises(DataError, match="out of range 0..9"):
        load_splits("fashion-mnist", data_dir=tmp_path)


def test_fmnist_fake_full_size_splits_fixed_by_seed(tmp_path: Path) -> None:
    _fake_fmnist(tmp_path, 60_000, 10_000)
    a = load_splits("fashion-mnist", data_dir=tmp_path, seed=3)
    b = load_splits("fashion-mnist", data_dir=tmp_path, seed=3)
    c = load_splits("fashion-mnist", data_dir=tmp_path, seed=4)
    assert {k: len(v) for k, v in a.y.items()} == {"train": 55_000, "val": 5_000, "test": 10_000}
    np.testing.assert_array_equal(a.sets["val"].all(), b.sets["val"].all())
    assert not np.array_equal(a.sets["val"].all(), c.sets["val"].all())
    np.testing.assert_array_equal(a.y["test"], c.y["test"])  # test never depends on the seed
    assert a.input_shape == (1, 28, 28)
    assert abs(float(a.sets["train"].all().mean())) < 1e-3  # normalised with train statistics


def test_missing_file_names_it(tmp_path: Path) -> None:
    _fake_fmnist(tmp_path, 10, 10)
    (tmp_path / FMNIST_FILES["test_labels"]).unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_splits("fashion-mnist", data_dir=tmp_path)


def test_digits_limit_and_disjoint_splits() -> None:
    s = load_splits("digits", seed=0, limit=300)
    assert len(s.y["train"]) == 300
    assert s.input_shape == (1, 8, 8) and s.num_classes == 10
    full = load_splits("digits", seed=0)
    rows = {
        split: {r.tobytes() for r in full.sets[split].all().reshape(len(full.y[split]), -1)}
        for split in ("train", "val", "test")
    }
    assert not rows["train"] & rows["test"] and not rows["val"] & rows["test"]
