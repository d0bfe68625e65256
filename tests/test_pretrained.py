"""A user's own pretrained network: a plain nn.Module split into blocks where that is safe
(hapi_dse.models.split), and --init with the user's own state dict."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from hapi_dse.errors import ArtefactError, UsageError
from hapi_dse.examples.pretrained import TinyResNet, tiny_resnet
from hapi_dse.models import build, create_backbone
from hapi_dse.models.early_exit import architecture_spec
from hapi_dse.models.split import split_module
from hapi_dse.training.trainer import _load_init

FACTORY = "hapi_dse.examples.pretrained:tiny_resnet"


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


def _randomise_bn(module: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so eval mode is not the identity."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return module


def _same_output(module: nn.Module, blocks: list[nn.Module], classifier: nn.Module) -> None:
    x = torch.randn(3, 1, 12, 12)
    module.eval()
    with torch.no_grad():
        y = x
        for b in blocks:
            y = b(y)
            assert y.dim() == 4
        torch.testing.assert_close(classifier(y), module(x), rtol=0, atol=0)


def test_sequential_of_stages_splits_each_child_and_its_tail() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(
        nn.Sequential(
            _stage(1, 8, 1),
            _stage(8, 16, 2),
            _stage(16, 16, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 32),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(32, 5),
        )
    )
    blocks, classifier = split_module(model, (1, 12, 12), "--backbone 'x:y'")
    assert len(blocks) == 3  # the stages; the ReLU after the last stage joins it
    assert blocks[0] is model[0] and blocks[1] is model[1]
    assert isinstance(blocks[2], nn.Sequential) and blocks[2][0] is model[2]
    assert model.training  # the check ran in eval mode and put the mode back
    _same_output(model, blocks, classifier)


def test_resnet_style_module_splits_at_every_residual_block() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(TinyResNet(num_classes=4, small_input=False))
    model.train()
    blocks, classifier = split_module(model, (1, 12, 12), "--backbone 'x:y'")
    residual = [b for n in ("layer1", "layer2", "layer3") for b in getattr(model, n)]
    assert len(blocks) == len(residual) == 6
    # the stem runs in front of the first residual block; the other blocks are shared as is
    assert list(blocks[0]) == [model.conv1, model.bn1, model.relu, model.maxpool, residual[0]]
    assert all(b is r for b, r in zip(blocks[1:], residual[1:], strict=True))
    _same_output(model, blocks, classifier)


def test_factory_returning_a_module_gives_a_backbone_sharing_its_weights() -> None:
    bb = create_backbone(FACTORY, num_classes=10, input_shape=(1, 8, 8))
    assert isinstance(bb.source, TinyResNet)
    assert [(e.channels, e.height, e.width) for e in bb.exits] == [
        (8, 8, 8), (8, 8, 8), (16, 4, 4), (16, 4, 4), (32, 2, 2), (32, 2, 2),
    ]  # fmt: skip
    shared = {id(p) for p in bb.parameters()}
    assert shared == {id(p) for p in bb.source.parameters()}
    # the source is not a submodule: each tensor once in the backbone's own state dict
    assert not any(k.startswith("source") for k in bb.state_dict())


class _ScaledResNet(TinyResNet):
    """ResNet-style children, but a forward that does more than run them in order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


class _Unstructured(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = _stage(1, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))


@pytest.mark.parametrize(
    "model,reason",
    [
        (_ScaledResNet(), r"blocks chained do not reproduce its output \(max difference"),
        (_Unstructured(), "neither an nn.Sequential of stages nor a ResNet-style module"),
        (nn.Sequential(_stage(1, 4, 1), _stage(4, 4, 1)), "does not end in a classifier"),
        (
            nn.Sequential(_stage(1, 4, 1), nn.Flatten(), nn.Linear(4 * 64, 8), _stage(8, 4, 1)),
            "does not end in a classifier",
        ),
        (
            nn.Sequential(
                _stage(1, 4, 1),
                nn.Flatten(1),
                nn.Unflatten(1, (4, 8, 8)),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(4, 3),
            ),
            r"block 1 returns \(2, 256\), expected \(N, C, H, W\)",
        ),
    ],
    ids=["forward-differs", "no-structure", "no-tail", "conv-after-linear", "flat-block"],
)
def test_unsafe_module_is_refused_in_one_line_with_the_fix(model: nn.Module, reason: str) -> None:
    with pytest.raises(UsageError, match=reason) as e:
        split_module(model, (1, 8, 8), "--backbone 'mine:make'")
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith(f"--backbone 'mine:make': cannot split {type(model).__name__}")
    assert text.endswith("classifier mapping the last block's output to logits")
    assert "return (blocks, classifier) from the factory instead" in text


def _net() -> nn.Module:
    return build(architecture_spec(FACTORY, {}, ["linear"], (1, 8, 8), 10))


def test_init_with_the_users_state_dict_loads_their_module(tmp_path: Path) -> None:
    torch.manual_seed(1)
    mine = _randomise_bn(tiny_resnet(num_classes=10, input_shape=(1, 8, 8))).eval()
    torch.save(mine.state_dict(), tmp_path / "mine.pt")
    torch.manual_seed(2)  # the network hapi builds starts from other weights
    net = _net()
    _load_init(net, tmp_path / "mine.pt")
    for k, v in mine.state_dict().items():
        assert torch.equal(net.backbone.source.state_dict()[k], v), k
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net.backbone.eval()(x), mine(x), rtol=0, atol=0)
    # hapi's own format (a run's weights.pt: backbone.* keys) still loads
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    again = _net()
    _load_init(again, tmp_path / "weights.pt")
    for k, v in net.backbone.state_dict().items():
        assert torch.equal(again.backbone.state_dict()[k], v), k


def test_init_refuses_a_pickled_model_and_a_wrong_shape(tmp_path: Path) -> None:
    mine = tiny_resnet(num_classes=10, input_shape=(1, 8, 8))
    torch.save(mine, tmp_path / "model.pt")  # the whole module: pickled code, not loaded
    with pytest.raises(ArtefactError, match=r"cannot load a state dict .*model\.state_dict\(\)"):
        _load_init(_net(), tmp_path / "model.pt")
    state = mine.state_dict()
    state["fc.weight"] = torch.zeros(3, 32)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(
        ArtefactError, match=r"'fc.weight' has shape \(3, 32\), expected \(10, 32\)"
    ):
        _load_init(_net(), tmp_path / "shape.pt")


def test_mismatched_checkpoint_is_one_line_exit_2(run_cli, tmp_path: Path) -> None:
    state = tiny_resnet(num_classes=10, input_shape=(1, 8, 8)).state_dict()
    del state["layer2.0.conv1.weight"]
    state["head.weight"] = torch.zeros(10, 32)
    torch.save(state, tmp_path / "bad.pt")
    out = tmp_path / "run"
    r = run_cli(
        "train", "--dataset", "digits", "--backbone", FACTORY, "--init", tmp_path / "bad.pt",
        "--epochs", "0", "--exit-epochs", "1", "--out", out,
    )  # fmt: skip
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert (
        f"--init {tmp_path / 'bad.pt'}: does not fit the factory's TinyResNet: missing key "
        "'layer2.0.conv1.weight', unexpected key 'head.weight'"
    ) in r.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--epochs", "0"], "--epochs 0: expected at least 1"),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
    ],
)
def test_example_pretraining_bad_input_is_one_line_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hapi_dse.examples.pretrained import main

    out = tmp_path / "pretrained.pt"
    try:
        code = main([str(out), *args])
    except SystemExit as e:
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not out.exists()
