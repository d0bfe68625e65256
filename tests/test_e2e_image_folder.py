"""The whole pipeline on a generated image folder of 64x64 RGB images, through the real CLI:
train -> profile -> search -> export -> eval.

The real ``hapi profile`` (modelled from a shipped spec: it still exports and checks every
segment and probe graph) took 2-3 minutes on 2 loaded cores, so that variant is ``slow``; the
default one stands a made-up table in for it."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hapi_dse.testing import search_args

PIL = pytest.importorskip("PIL.Image")

CLASSES = ("circle", "square", "stripes")
DEVICE = "pixel6"  # a shipped spec: the modelled table needs no timing of this machine


def _image(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A 64x64 RGB image of one class: a bright shape on noise, in a random colour."""
    yy, xx = np.mgrid[:64, :64]
    cy, cx = rng.integers(20, 44, 2)
    if kind == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < 14**2
    elif kind == "square":
        mask = (abs(yy - cy) < 12) & (abs(xx - cx) < 12)
    else:
        mask = (xx + int(cx)) % 12 < 6
    img = rng.integers(0, 60, (64, 64, 3))
    img[mask] = rng.integers(150, 256, 3)
    return img.astype(np.uint8)


def _dataset(root: Path, per_class: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            PIL.fromarray(_image(name, rng)).save(root / name / f"{i}.png")
    return root


def _pipeline(run_cli, tmp_path: Path, profile: Callable[[Path, Path], None]) -> None:  # type: ignore[no-untyped-def]
    data = _dataset(tmp_path / "shapes")
    run, profiles, result = tmp_path / "run", tmp_path / "profiles", tmp_path / "result"
    common = ["--threads", "1", "-q"]

    res = run_cli(
        "train", "--dataset", data, "--backbone", "resnet20", "--heads", "linear",
        "--epochs", "1", "--exit-epochs", "1", "--batch-size", "16", "--seed", "3", "--out", run,
        *common,
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    model = json.loads((run / "model.json").read_text())
    train = json.loads((run / "train.json").read_text())
    assert model["arch"]["input_shape"] == [3, 64, 64]
    assert model["classes"] == list(CLASSES)
    assert model["dataset"] == str(data.resolve())
    assert len(model["normalization"]["mean"]) == len(model["normalization"]["std"]) == 3
    identity = train["inputs"]["dataset"]
    assert identity["files"] == 72 and len(identity["sha256"]) == 64
    n_test = train["splits"]["test"]
    assert n_test == 3 * round(24 * 0.1) and sum(train["splits"].values()) == 72

    profile(run, profiles)
    assert (profiles / DEVICE / f"{model['model_id']}.csv").is_file()

    res = run_cli(*search_args(run, profiles, result, "-q", device=DEVICE, trials=20))
    assert res.exit_code == 0, res.stderr
    with open(result / DEVICE / "trials.csv", newline="") as f:
        assert any(r["state"] == "COMPLETE" for r in csv.DictReader(f))

    onnx_path = tmp_path / "model.onnx"
    res = run_cli("export", result, "--out", onnx_path, "-q")
    assert res.exit_code == 0, res.stderr
    assert onnx_path.is_file()

    report = tmp_path / "eval.json"
    res = run_cli(
        "eval", onnx_path, "--profiles", profiles, "--device", DEVICE, "--out", report,
        "--warmup", "0", *common,
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    rep = json.loads(report.read_text())
    assert rep["n"] == n_test  # the run's own test split, read from the recorded folder
    assert sum(rep["measured"]["exit_histogram"]) == n_test
    assert 0.0 <= rep["measured"]["accuracy"] <= 1.0
    assert rep["fidelity"]["prediction_agreement"] >= 0.99

    # the folder moved: named again, it is recognised by its content and split as in training
    from hapi_dse.deploy.inputs import load_samples
    from hapi_dse.run import RunDir

    before = load_samples(RunDir(run), "test")
    moved = data.rename(tmp_path / "moved")
    after = load_samples(RunDir(run), "test", dataset=str(moved))
    np.testing.assert_array_equal(after.x, before.x)
    np.testing.assert_array_equal(after.y, before.y)


def test_image_folder_through_every_command(run_cli, tmp_path: Path, write_fake_table) -> None:  # type: ignore[no-untyped-def]
    _pipeline(run_cli, tmp_path, lambda run, profiles: write_fake_table(run, profiles, DEVICE))


@pytest.mark.slow
def test_image_folder_through_every_command_real_profile(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def profile(run: Path, profiles: Path) -> None:
        res = run_cli(
            "profile", "--model", run, "--modelled", "--device", DEVICE,
            "--profiles", profiles, "-q",
        )  # fmt: skip
        assert res.exit_code == 0, res.stderr

    _pipeline(run_cli, tmp_path, profile)
