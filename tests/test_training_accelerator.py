"""--accelerator and --amp: device selection without a GPU, the mixed-precision step on the
CPU's autocast, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hapi_dse.data import load_splits
from hapi_dse.errors import UsageError
from hapi_dse.models.early_exit import architecture_spec, build
from hapi_dse.training.device import Accelerator, select_accelerator
from hapi_dse.training.loops import Precision, train_exits
from hapi_dse.training.trainer import TrainConfig


@pytest.mark.parametrize(
    ("accelerator", "amp", "cuda", "bf16", "expected"),
    [
        ("auto", None, False, None, ("cpu", None)),
        ("cpu", None, True, True, ("cpu", None)),
        ("auto", None, True, True, ("cuda", None)),  # mixed precision only when asked
        ("cuda", True, True, False, ("cuda", "float16")),
        ("cuda", False, True, True, ("cuda", None)),
        ("auto", True, True, True, ("cuda", "bfloat16")),
    ],
)
def test_select_accelerator(
    accelerator: str, amp: bool | None, cuda: bool, bf16: bool | None, expected: tuple
) -> None:
    acc = select_accelerator(accelerator, amp, cuda=cuda, cuda_name="GPU X", bf16=bf16)
    assert (acc.device, acc.amp_dtype) == expected
    assert acc.name == ("GPU X" if acc.device == "cuda" else "cpu")
    assert acc.to_dict() == {"device": acc.device, "name": acc.name, "amp": acc.amp_dtype}


def test_select_accelerator_refuses() -> None:
    with pytest.raises(UsageError, match="accelerator cuda: torch .* sees no CUDA device"):
        select_accelerator("cuda", None, cuda=False)
    with pytest.raises(UsageError, match="amp: mixed precision is for CUDA only"):
        select_accelerator("auto", True, cuda=False)
    with pytest.raises(UsageError, match="expected one of auto, cpu, cuda"):
        select_accelerator("tpu", None, cuda=False)


def test_this_machine_resolves_as_torch_says() -> None:
    acc = select_accelerator("auto", None)
    assert acc.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_mixed_precision_step_under_cpu_autocast() -> None:
    """The amp code path (autocast around the forward and loss) trains the heads; on the CPU
    bfloat16 autocast stands in for the GPU's."""
    torch.manual_seed(0)
    data = load_splits("digits", seed=0, limit=64)
    net = build(architecture_spec("resnet20", {}, ["linear"], data.input_shape, 10))
    precision = Precision(Accelerator("cpu", "cpu", "bfloat16"))
    with precision.autocast():
        assert net.backbone(torch.zeros(2, 1, 8, 8)).dtype == torch.bfloat16
    before = {k: v.clone() for k, v in net.heads.state_dict().items()}
    cfg = TrainConfig(out=Path("unused"), dataset="digits", exit_epochs=1, batch_size=32)
    history = train_exits(net, data, cfg, torch.Generator().manual_seed(0), precision)
    assert torch.isfinite(torch.tensor(history[0]["mean_exit_loss"]))
    after = net.heads.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in before.items())
    assert all(v.dtype == torch.float32 for v in after.values())  # weights stay float32


def test_run_records_the_accelerator(tiny_run: Path) -> None:
    train = json.loads((tiny_run / "train.json").read_text())
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert train["accelerator"]["device"] == expected
    assert train["settings"]["accelerator"] == "auto" and train["settings"]["amp"] is None
    state = torch.load(tiny_run / "weights.pt", weights_only=True)
    assert all(v.device.type == "cpu" for v in state.values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cli_cuda_without_gpu_is_one_line(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = ["train", "--dataset", "digits", "--epochs", "1", "--out", tmp_path / "run"]
    res = run_cli(*base, "--accelerator", "cuda")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert "sees no CUDA device" in res.stderr and "Traceback" not in res.stderr
    res = run_cli(*base, "--amp")
    assert res.exit_code == 2 and "mixed precision is for CUDA only" in res.stderr
    res = run_cli(*base, "--accelerator", "tpu")
    assert res.exit_code == 2 and "--accelerator" in res.stderr
    assert not (tmp_path / "run").exists()
