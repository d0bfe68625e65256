"""``.npz`` datasets: layouts, optional splits and classes, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hapi_dse.data import load_splits
from hapi_dse.errors import DataError


def _arrays(n: int = 40, shape: tuple[int, ...] = (6, 5), classes: int = 3) -> dict:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return {"x": x, "y": (np.arange(n) % classes).astype(np.int64)}


def _save(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((6, 5), (1, 6, 5)), ((6, 5, 3), (3, 6, 5)), ((3, 6, 5), (3, 6, 5)), ((6, 5, 4), (3, 6, 5))],
    ids=["NHW", "NHWC", "NCHW", "NHWC-rgba"],
)
def test_layouts(tmp_path: Path, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    data = load_splits(_save(tmp_path / "d.npz", **_arrays(shape=shape)), seed=0)
    assert data.input_shape == expected
    assert data.classes == ("0", "1", "2")
    assert sum(len(s) for s in data.sets.values()) == 40
    x = data.sets["train"].all()
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    assert len(data.mean) == expected[0]
    assert data.identity is not None and data.identity["files"] == 1


def test_given_splits_and_classes(tmp_path: Path) -> None:
    a = _arrays(30)
    t = _arrays(9)
    path = _save(
        tmp_path / "d.npz",
        x_train=a["x"],
        y_train=a["y"],
        x_test=t["x"],
        y_test=t["y"],
        classes=np.array(["ant", "bee", "cat"]),
    )
    data = load_splits(path, seed=0)
    assert data.classes == ("ant", "bee", "cat")
    assert len(data.sets["test"]) == 9 and len(data.sets["val"]) == 3
    assert len(data.sets["train"]) == 27
    # raw uint8 scaled by 1/255, then normalised with the train split's statistics
    raw = data.sets["test"].all() * np.float32(data.std[0]) + np.float32(data.mean[0])
    np.testing.assert_allclose(raw[:, 0] * 255, t["x"], atol=1e-3)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 3, 3)), "y": np.zeros(5, int)}, "x has 4 images but y has 5"),
        ({"x": np.zeros((4, 3, 3))}, "no array 'y'"),
        (
            {
                "x": np.zeros((4, 3, 3)),
                "y": np.array([0, 1, 2, 3]),
                "classes": np.array(["a", "b"]),
            },
            "label 2 in the train split is out of range 0..1",
        ),
        ({"x": np.zeros((4, 3, 3)), "y": np.array([0, 1, -1, 0])}, "label -1"),
        ({"x": np.zeros((4, 3, 3)), "y": np.zeros(4, int)}, "single class"),
        ({"x": np.zeros((4, 2, 3, 5)), "y": np.array([0, 1, 0, 1])}, "has shape \\(4, 2, 3, 5\\)"),
        ({"x": np.full((4, 3, 3), np.nan), "y": np.array([0, 1, 0, 1])}, "finite numbers"),
        ({"x": np.zeros((4, 3, 3)), "y": np.array([0.0, 1, 0, 1])}, "integer labels"),
        (
            {"x": np.zeros((4, 3, 3)), "y": np.array([0, 1, 0, 1]), "x_val": np.zeros((2, 3, 3))},
            "no array 'y_val'",
        ),
    ],
    ids=["lengths", "no-y", "range", "negative", "one-class", "shape", "nan", "float-y", "val"],
)
def test_errors(tmp_path: Path, arrays: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_splits(_save(tmp_path / "d.npz", **arrays))


def test_not_an_npz_and_no_pickles(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz: not a readable .npz file"):
        load_splits(str(bad))
    objects = np.array([{"a": 1}, {"b": 2}], dtype=object)
    path = _save(tmp_path / "obj.npz", x=objects, y=np.array([0, 1]))
    with pytest.raises(DataError, match="not a readable .npz file.*pickle"):
        load_splits(path)
