"""Per-channel normalisation as recorded in model.json, and its readers: the run check,
hapi eval's samples and the staged runtime's normalize(); old runs with one number each
still read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hapi_dse.deploy.inputs import load_samples
from hapi_dse.deploy.staged_runtime import StagedModel
from hapi_dse.errors import ArtefactError
from hapi_dse.run import RunDir


def _with_normalization(run: Path, out: Path, norm: object) -> RunDir:
    shutil.copytree(run, out)
    model = json.loads((out / "model.json").read_text())
    model["normalization"] = norm
    (out / "model.json").write_text(json.dumps(model))
    return RunDir(out)


def test_recorded_per_channel_and_old_scalar_runs_read_alike(
    tiny_run: Path, tmp_path: Path
) -> None:
    norm = json.loads((tiny_run / "model.json").read_text())["normalization"]
    assert isinstance(norm["mean"], list) and len(norm["mean"]) == 1  # digits: one channel
    x = load_samples(RunDir(tiny_run), "test").x
    head = load_samples(RunDir(tiny_run), "test", first=5)
    np.testing.assert_array_equal(head.x, x[:5])
    assert len(head.y) == 5
    scalar = {"mean": norm["mean"][0], "std": norm["std"][0]}
    old = _with_normalization(tiny_run, tmp_path / "old", scalar)
    np.testing.assert_array_equal(load_samples(old, "test").x, x)  # bit-identical
    other = {"mean": norm["mean"][0] + 0.5, "std": 2 * norm["std"][0]}
    moved = load_samples(_with_normalization(tiny_run, tmp_path / "other", other), "test").x
    raw = x * np.float32(norm["std"][0]) + np.float32(norm["mean"][0])
    np.testing.assert_allclose(moved, (raw - other["mean"]) / other["std"], atol=1e-5)


@pytest.mark.parametrize(
    "norm",
    [{"mean": [0.1, "a"], "std": [1.0, 1.0]}, {"mean": 0.1, "std": [1.0, 0.0]}, {"mean": []}],
    ids=["string", "zero-std", "empty"],
)
def test_bad_normalization_is_refused(tiny_run: Path, tmp_path: Path, norm: object) -> None:
    run = _with_normalization(tiny_run, tmp_path / "bad", norm)
    with pytest.raises(ArtefactError, match="normalization must be .*one per channel"):
        _ = run.model


@pytest.mark.parametrize(
    "norm",
    [{"mean": [0.2, 0.4, 0.6], "std": [0.5, 0.25, 0.1]}, {"mean": 0.4, "std": 0.25}],
    ids=["per-channel", "scalar"],
)
def test_staged_normalize_per_channel(norm: dict) -> None:
    staged = SimpleNamespace(manifest={"normalization": norm}, _x=np.zeros((1, 3, 4, 5)))
    raw = np.random.default_rng(0).integers(0, 256, (3, 4, 5), dtype=np.uint8)
    mean = np.asarray(norm["mean"], np.float32).reshape(-1, 1, 1)
    std = np.asarray(norm["std"], np.float32).reshape(-1, 1, 1)
    expected = ((raw / np.float32(255) - mean) / std)[None]
    got = StagedModel.normalize(staged, raw)  # type: ignore[arg-type]
    assert got.dtype == np.float32 and got.shape == (1, 3, 4, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    hwc = StagedModel.normalize(staged, raw.transpose(1, 2, 0))  # type: ignore[arg-type]
    np.testing.assert_array_equal(hwc, got)  # as an image library gives it
