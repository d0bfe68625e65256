"""Contract tests over every registered backbone and head."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hapi_dse.errors import UsageError
from hapi_dse.models import BACKBONES, HEADS, build, create_backbone
from hapi_dse.models.early_exit import architecture_spec, model_id, state_shapes, weights_identity

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]


@pytest.mark.parametrize("name", BACKBONES.names())
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_exit_metadata_matches_tensors(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    bb = create_backbone(name, num_classes=7, input_shape=shape).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        feats, logits = bb.forward_intermediates(x)
    assert [e.position for e in bb.exits] == list(range(bb.num_blocks))
    for e in bb.exits:
        assert tuple(feats[e.position].shape) == (2, e.channels, e.height, e.width), e
    assert logits is not None and logits.shape == (2, 7)
    with torch.no_grad():
        torch.testing.assert_close(bb(x), logits)


@pytest.mark.parametrize("name", BACKBONES.names())
def test_early_stopping_forward_equals_full(name: str) -> None:
    bb = create_backbone(name, num_classes=10, input_shape=(1, 28, 28)).eval()
    x = torch.randn(3, 1, 28, 28)
    stop = bb.num_blocks // 2
    with torch.no_grad():
        full, _ = bb.forward_intermediates(x)
        early, final = bb.forward_intermediates(x, positions=[stop], stop_at=stop)
    assert final is None and list(early) == [stop]
    torch.testing.assert_close(early[stop], full[stop], rtol=0, atol=0)


def test_resnet32_default_has_15_blocks() -> None:
    assert create_backbone("resnet32", num_classes=10, input_shape=(1, 28, 28)).num_blocks == 15


@pytest.mark.parametrize("head", HEADS.names())
@pytest.mark.parametrize("channels,size", [(16, 14), (64, 4), (8, 1)])
def test_head_contract(head: str, channels: int, size: int) -> None:
    module = HEADS.create(head, channels=channels, height=size, width=size, num_classes=5).eval()
    assert module(torch.randn(2, channels, size, size)).shape == (2, 5)


def test_early_exit_net_columns_and_logits() -> None:
    arch = architecture_spec("resnet20", {}, ["linear", "conv"], (1, 28, 28), 10)
    net = build(arch).eval()
    cols = net.columns
    assert len(cols) == 9 * 2 + 1 and cols[-1] == (8, "final")
    assert [p for p, _ in cols] == sorted(p for p, _ in cols)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        logits, feats = net.all_logits(x)
        assert logits.shape == (2, len(cols), 10)
        torch.testing.assert_close(logits[:, 3], net.head(*cols[3])(feats[cols[3][0]]))
        torch.testing.assert_close(logits[:, -1], net.backbone(x))


def test_model_id_depends_on_architecture_and_weights() -> None:
    a = architecture_spec("resnet20", {}, ["linear"], (1, 28, 28), 10)
    b = architecture_spec("resnet20", {}, ["linear", "mlp"], (1, 28, 28), 10)
    w = "0" * 64
    ida, idb = (model_id(s, state_shapes(build(s)), w) for s in (a, b))
    assert ida.startswith("resnet20-") and len(ida) == len("resnet20-") + 8 and ida != idb
    assert ida == model_id(a, state_shapes(build(a)), w)
    assert ida != model_id(a, state_shapes(build(a)), "1" * 64)  # another training


def test_weights_identity_of_a_saved_state_dict(tmp_path: Path) -> None:
    arch = architecture_spec("resnet20", {}, ["linear"], (1, 8, 8), 10)
    net = build(arch)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    mid, digest = weights_identity(arch, tmp_path / "weights.pt")
    assert len(digest) == 64 and mid == model_id(arch, state_shapes(net), digest)
    with torch.no_grad():
        next(iter(net.parameters())).add_(0.01)
    torch.save(net.state_dict(), tmp_path / "other.pt")
    other, other_digest = weights_identity(arch, tmp_path / "other.pt")
    assert other_digest != digest and other != mid


def test_unknown_backbone_suggests_nearest() -> None:
    with pytest.raises(UsageError, match="unknown backbone 'resnet33'.*did you mean 'resnet32'"):
        create_backbone("resnet33", num_classes=10, input_shape=(1, 28, 28))


def test_user_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mynet.py").write_text(
        "from torch import nn\n"
        "def make(num_classes, input_shape):\n"
        "    c = input_shape[0]\n"
        "    blocks = [nn.Sequential(nn.Conv2d(c, 4, 3, 2, 1), nn.ReLU()),\n"
        "              nn.Sequential(nn.Conv2d(4, 6, 3, 2, 1), nn.ReLU())]\n"
        "    return blocks, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                                 nn.Linear(6, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    bb = create_backbone("mynet:make", num_classes=3, input_shape=(1, 28, 28))
    assert [(e.channels, e.height) for e in bb.exits] == [(4, 14), (6, 7)]
    assert bb(torch.randn(1, 1, 28, 28)).shape == (1, 3)
    sys.modules.pop("mynet", None)


@pytest.mark.parametrize(
    "spec,match",
    [
        ("nosuchmodule_xyz:make", "cannot import"),
        ("json:nosuchfactory", "has no 'nosuchfactory'"),
    ],
)
def test_user_factory_errors(spec: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        create_backbone(spec, num_classes=3, input_shape=(1, 28, 28))


def test_registry_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        HEADS.register("linear")(lambda **kw: nn.Identity())
