"""IC-only training, distillation, calibration and the run directory it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hapi_dse.data import load_splits
from hapi_dse.models.early_exit import architecture_spec, build
from hapi_dse.ownership import MANIFEST, owned_kind
from hapi_dse.run import RUN_FILES, RunDir
from hapi_dse.testing import train_args
from hapi_dse.training.calibration import exit_statistics, fit_temperatures, nll_per_column
from hapi_dse.training.loops import state_digest, train_exits
from hapi_dse.training.losses import Distill, exit_loss
from hapi_dse.training.trainer import TrainConfig, summary_table, train

#: one epoch of resnet20 with a linear head on digits (as hapi_dse.testing.train_args)
ONE_EPOCH = dict(dataset="digits", backbone="resnet20", epochs=1, exit_epochs=1, heads=("linear",))


def test_exit_training_leaves_backbone_bit_identical() -> None:
    torch.manual_seed(0)
    data = load_splits("digits", seed=0, limit=128)
    net = build(architecture_spec("resnet20", {}, ["linear", "conv", "mlp"], data.input_shape, 10))
    net.train()  # as after backbone training: BatchNorm would update its statistics
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    heads_before = {k: v.clone() for k, v in net.heads.state_dict().items()}
    cfg = TrainConfig(
        out=Path("unused"),
        dataset="digits",
        backbone="resnet20",
        exit_epochs=1,
        batch_size=32,
        distill=Distill(2.0, 0.5),
    )
    train_exits(net, data, cfg, torch.Generator().manual_seed(0))
    after = net.backbone.state_dict()
    assert any("running_mean" in k for k in before)
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert any(not torch.equal(v, net.heads.state_dict()[k]) for k, v in heads_before.items())


def test_distillation_loss_matches_hand_computation() -> None:
    student = torch.tensor([[2.0, 0.0, -1.0]])
    teacher = torch.tensor([[0.5, 1.5, 0.0]])
    label = torch.tensor([1])
    t, alpha = 2.0, 0.3

    def softmax(v: list[float]) -> list[float]:
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]

    ce = -math.log(softmax([2.0, 0.0, -1.0])[1])
    p_t = softmax([0.25, 0.75, 0.0])
    p_s = softmax([1.0, 0.0, -0.5])
    kl = sum(a * math.log(a / b) for a, b in zip(p_t, p_s, strict=True))
    expected = (1 - alpha) * ce + alpha * t * t * kl
    got = exit_loss(student, label, teacher, Distill(t, alpha))
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(exit_loss(student, label)) == pytest.approx(ce, rel=1e-6)


@pytest.mark.parametrize("text", ["3", "x:0.5", "3:1.5", "0:0.5", "-1:0.2", "3:0.5:1"])
def test_distill_parse_rejects(text: str) -> None:
    from hapi_dse.errors import UsageError

    with pytest.raises(UsageError, match="expected T:alpha|T must be > 0"):
        Distill.parse(text)


def test_temperature_scaling_lowers_val_nll() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (400,), generator=gen)
    logits = torch.randn(400, 3, 5, generator=gen)
    logits[torch.arange(400), :, labels] += 1.0
    logits[:, 0] *= 6.0  # over-confident column
    logits[:, 1] *= 0.3  # under-confident column
    temps = fit_temperatures(logits, labels)
    before = nll_per_column(logits.double(), labels, torch.ones(3, dtype=torch.float64))
    after = nll_per_column(logits.double(), labels, torch.as_tensor(temps).double())
    assert (after <= before + 1e-9).all()
    assert after[0] < before[0] - 0.1 and after[1] < before[1] - 0.01
    assert temps[0] > 1 > temps[1]
    conf, ent, pred = exit_statistics(logits, temps)
    assert conf.shape == ent.shape == pred.shape == (400, 3)
    assert ((conf > 0) & (conf <= 1)).all() and ((ent >= 0) & (ent <= 1)).all()
    np.testing.assert_array_equal(pred, logits.argmax(-1).numpy())


def test_run_directory_contract(tiny_run: Path) -> None:
    assert sorted(p.name for p in tiny_run.iterdir()) == sorted([*RUN_FILES, MANIFEST])
    assert owned_kind(tiny_run) == "run"
    run = RunDir(tiny_run)
    model = run.model
    assert model["model_id"].startswith("resnet20-")
    k = len(model["columns"])
    assert k == 9 * 3 + 1
    for split in ("val", "test"):
        with np.load(tiny_run / f"exits_{split}.npz", allow_pickle=False) as z:
            assert set(z.files) == {
                "labels",
                "confidence",
                "entropy",
                "prediction",
                "position",
                "head",
            }
            n = len(z["labels"])
            assert z["confidence"].shape == z["entropy"].shape == z["prediction"].shape == (n, k)
            assert z["head"].dtype.kind == "U"
            assert z["head"][-1] == "final" and z["position"][-1] == 8
            assert list(z["position"][:3]) == [0, 0, 0]
    train_json = json.loads((tiny_run / "train.json").read_text())
    assert {"versions", "inputs", "settings", "seed", "per_exit", "timings"} <= set(train_json)
    assert len(train_json["per_exit"]) == k
    flops = run.flops()
    assert [r["segment"] for r in flops].count("block") == 9
    assert [r["segment"] for r in flops].count("head") == 27
    assert all(r["params"] > 0 for r in flops)
    assert all(r["flops"] > 0 for r in flops if r["segment"] == "block")
    net = run.load_model()
    assert not net.training


def test_statistics_match_the_saved_model(tiny_run: Path) -> None:
    """The cached confidences are what the saved weights and temperatures give."""
    run = RunDir(tiny_run)
    net = run.load_model()
    data = load_splits("digits", seed=0, limit=400)
    stats = run.stats("val")
    with torch.no_grad():
        logits, _ = net.all_logits(torch.from_numpy(data.sets["val"].all()))
    conf, _, pred = exit_statistics(logits, np.array(run.model["temperatures"], dtype=np.float32))
    np.testing.assert_array_equal(stats.labels, data.y["val"])
    np.testing.assert_array_equal(stats.prediction, pred)
    np.testing.assert_allclose(stats.confidence, conf, atol=1e-5)


def test_interrupted_training_leaves_no_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hapi_dse.training.trainer as trainer

    def boom(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "flops_table", boom)  # fails while the run dir is written
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=out, **ONE_EPOCH, limit=64))  # type: ignore[arg-type]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_same_seed_same_statistics(tmp_path: Path) -> None:
    cfg = dict(ONE_EPOCH, limit=96, threads=1)
    train(TrainConfig(out=tmp_path / "a", **cfg))  # type: ignore[arg-type]
    train(TrainConfig(out=tmp_path / "b", **cfg))  # type: ignore[arg-type]
    assert state_digest(RunDir(tmp_path / "a").load_model()) == state_digest(
        RunDir(tmp_path / "b").load_model()
    )
    a, b = RunDir(tmp_path / "a").stats("test"), RunDir(tmp_path / "b").stats("test")
    np.testing.assert_array_equal(a.confidence, b.confidence)


@pytest.mark.parametrize(
    "args,match",
    [
        (["--backbone", "resnet33"], "unknown backbone 'resnet33'"),
        (["--distill", "fast"], "expected T:alpha"),
        (["--data-dir", "/nonexistent/fmnist"], "/nonexistent/fmnist: no such directory"),
        (["--heads", "linear,tree"], "unknown head 'tree'"),
        (["--epochs", "0"], "needs --init"),
    ],
)
def test_cli_errors_one_line_exit_2(run_cli, tmp_path: Path, args: list[str], match: str) -> None:
    res = run_cli("train", "--limit", "50", "--out", tmp_path / "r", *args)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "r").exists()


def test_cli_missing_dataset_names_package(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hapi_dse.data.datasets as ds

    monkeypatch.delenv("HAPI_DATA", raising=False)
    monkeypatch.setattr(ds, "SYSTEM_DIR", tmp_path / "absent")
    res = run_cli("train", "--out", tmp_path / "r")
    assert res.exit_code == 2
    assert "dataset-fashion-mnist" in res.stderr and "--data-dir" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_train_digits_end_to_end(run_cli, tmp_path: Path) -> None:
    res = run_cli(*train_args(tmp_path / "r", limit=64, threads=1))
    assert res.exit_code == 0, res.stderr
    run = RunDir(tmp_path / "r")
    assert run.stats("test").k == 10
    # the console shows the accuracy table of train.json and names the model written
    train_json = json.loads((tmp_path / "r" / "train.json").read_text())
    *table, last = res.stdout.strip().splitlines()
    assert "\n".join(table) == summary_table(train_json)
    assert last.startswith(f"model {run.model_id} written to {tmp_path / 'r'} (")
    assert run.model_id.startswith("resnet20-")


def test_summary_table_shows_each_exit_val_and_test_accuracy() -> None:
    per_exit = [
        {"position": p, "head": h, "val_acc": va, "test_acc": ta}
        for p, h, va, ta in [
            (0, "linear", 0.5, 0.25),
            (0, "conv", 0.625, 0.5),
            (1, "linear", 0.75, 0.7),
            (1, "conv", 0.875, 0.8),
            (1, "final", 0.9, 0.8125),
        ]
    ]
    lines = summary_table({"per_exit": per_exit}).splitlines()
    assert lines[0].split() == ["pos", "linear", "conv", "(val", "/", "test", "accuracy,", "%)"]
    cells = [line.split() for line in lines[1:3]]
    assert cells == [["0", "50.0/25.0", "62.5/50.0"], ["1", "75.0/70.0", "87.5/80.0"]]
    assert lines[3] == "final (backbone): val 90.00 %, test 81.25 %"
