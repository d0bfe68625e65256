"""Built-in backbones in plain torch, and loading of a user's own.

A backbone is an ordered list of blocks plus a final classifier. A candidate exit follows
every block; :attr:`Backbone.exits` describes each one (position, channels, spatial size) and
is checked against real tensors by the contract tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from hapi_dse.errors import ArtefactError, SettingError, UsageError
from hapi_dse.models.registry import Registry


@dataclass(frozen=True)
class ExitPoint:
    """A candidate exit: after block ``position`` (0-based), features of this shape."""

    position: int
    channels: int
    height: int
    width: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Backbone(nn.Module):
    """Blocks run in order; an exit may follow any of them; ``classifier`` is the final exit.

    ``source`` is the user's module the blocks were split from (:mod:`~hapi_dse.models.split`),
    its submodules shared with the blocks: its state dict (the user's own keys) loads into
    the backbone. It is not a submodule, so the backbone's state dict has each tensor once.
    """

    source: nn.Module | None

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        classifier: nn.Module,
        exits: Sequence[ExitPoint],
        source: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.classifier = classifier
        self.exits = list(exits)
        object.__setattr__(self, "source", source)  # not registered: see the docstring
        if len(self.exits) != len(self.blocks):
            raise ValueError(f"{len(self.blocks)} blocks but {len(self.exits)} exit points")

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.classifier(x)

    def forward_intermediates(
        self, x: torch.Tensor, positions: Sequence[int] | None = None, stop_at: int | None = None
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
        """Features after the given blocks, and the final logits unless stopped early.

        ``stop_at`` ends the forward after that block (the final classifier is not run and
        ``None`` is returned in its place): what a deployed early exit does.
        """
        wanted = set(range(self.num_blocks) if positions is None else positions)
        feats: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in wanted:
                feats[i] = x
            if stop_at is not None and i >= stop_at:
                return feats, None
        return feats, self.classifier(x)


BACKBONES: Registry[Backbone] = Registry("backbone")


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


def _auto_stride(h: int, w: int) -> int:
    return 2 if min(h, w) >= 28 else 1


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True), _conv_bn(cout, cout, 3, 1)
        )
        self.shortcut = (
            _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Classifier(nn.Module):
    """Global average pool + linear layer (optionally after a 1x1 conv)."""

    def __init__(self, channels: int, num_classes: int, pre: nn.Module | None = None) -> None:
        super().__init__()
        self.pre = pre if pre is not None else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.pre(x)), 1))


def cifar_resnet(
    n: int,
    *,
    num_classes: int = 10,
    input_shape: Sequence[int] = (1, 28, 28),
    widths: Sequence[int] = (16, 32, 64),
    stem_stride: int | None = None,
) -> Backbone:
    """CIFAR-style ResNet (He et al. 2016, section 4.2): 3 stages of ``n`` basic blocks.

    The stem convolution is folded into the first block, so there are ``3 n`` blocks and as
    many exit positions. The stem halves the resolution of 28x28 and larger inputs (4x fewer
    FLOPs; stages then run at 14/7/4 or 16/8/4) and keeps it for smaller ones;
    ``stem_stride`` overrides that.
    """
    c_in, h, w = input_shape
    stem_stride = _auto_stride(h, w) if stem_stride is None else stem_stride
    stem = nn.Sequential(_conv_bn(c_in, widths[0], 3, stem_stride), nn.ReLU(inplace=True))
    h, w = _out(h, stem_stride), _out(w, stem_stride)

    def layers() -> Iterator[tuple[nn.Module, int, int]]:
        cin = widths[0]
        for stage, cout in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                yield BasicBlock(cin, cout, stride), stride, cout
                cin = cout

    blocks, exits = _chain(stem, layers(), h, w)
    return Backbone(blocks, Classifier(widths[-1], num_classes), exits)


@BACKBONES.register("resnet20")
def resnet20(**kw: Any) -> Backbone:
    """ResNet-20 (9 blocks, ~0.27 M parameters)."""
    return cifar_resnet(3, **kw)


@BACKBONES.register("resnet32")
def resnet32(**kw: Any) -> Backbone:
    """ResNet-32 (15 blocks, ~0.46 M parameters)."""
    return cifar_resnet(5, **kw)


@BACKBONES.register("resnet56")
def resnet56(**kw: Any) -> Backbone:
    """ResNet-56 (27 blocks, ~0.85 M parameters)."""
    return cifar_resnet(9, **kw)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [_conv_bn(cin, hidden, 1), nn.ReLU6(inplace=True)]
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.ReLU6(inplace=True),
            _conv_bn(hidden, cout, 1),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


# (expansion t, channels c, repeats n, first stride s), as in Sandler et al. 2018, Table 2,
# with strides adapted to 28x28 / 32x32 inputs (three downsamplings instead of five).
_MBV2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(v: float, divisor: int = 8) -> int:
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


@BACKBONES.register("mobilenetv2")
def mobilenetv2(
    *,
    num_classes: int = 10,
    input_shape: Sequence[int] = (1, 28, 28),
    width_mult: float = 0.5,
    stem_stride: int | None = None,
) -> Backbone:
    """MobileNetV2-style network: 17 inverted-residual blocks, stem folded into the first."""
    c_in, h, w = input_shape
    stem_stride = _auto_stride(h, w) if stem_stride is None else stem_stride
    cin = _make_divisible(32 * width_mult)
    stem = nn.Sequential(_conv_bn(c_in, cin, 3, stem_stride), nn.ReLU6(inplace=True))
    h, w = _out(h, stem_stride), _out(w, stem_stride)

    def layers() -> Iterator[tuple[nn.Module, int, int]]:
        c_prev = cin
        for t, c, n, s in _MBV2_SETTINGS:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                yield InvertedResidual(c_prev, cout, stride, t), stride, cout
                c_prev = cout

    blocks, exits = _chain(stem, layers(), h, w)
    cin = exits[-1].channels
    last = _make_divisible(1280 * max(1.0, width_mult))
    pre = nn.Sequential(_conv_bn(cin, last, 1), nn.ReLU6(inplace=True))
    return Backbone(blocks, Classifier(last, num_classes, pre), exits)


def _chain(
    stem: nn.Module, layers: Iterable[tuple[nn.Module, int, int]], h: int, w: int
) -> tuple[list[nn.Module], list[ExitPoint]]:
    """The backbone's blocks from ``(block, stride, channels out)`` in order, the stem in
    front of the first, and the exit point after each (its channels and feature map size
    from an input of ``h`` x ``w`` after the stem)."""
    blocks: list[nn.Module] = []
    exits: list[ExitPoint] = []
    for block, stride, cout in layers:
        blocks.append(nn.Sequential(stem, block) if not blocks else block)
        h, w = _out(h, stride), _out(w, stride)
        exits.append(ExitPoint(len(exits), cout, h, w))
    return blocks, exits


def _probe_exits(blocks: Sequence[nn.Module], input_shape: Sequence[int]) -> list[ExitPoint]:
    x = torch.zeros(1, *input_shape)
    exits = []
    with torch.no_grad():
        for i, b in enumerate(blocks):
            b.eval()
            x = b(x)
            if x.dim() != 4:
                raise UsageError(f"block {i} returns shape {tuple(x.shape)}: expected (N, C, H, W)")
            exits.append(ExitPoint(i, int(x.shape[1]), int(x.shape[2]), int(x.shape[3])))
    return exits


def load_factory(spec: str) -> Callable[..., Any]:
    """Resolve ``package.module:factory``."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise SettingError(
            "backbone", f"{spec!r}: expected a registered name or package.module:factory"
        )
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise SettingError("backbone", f"{spec!r}: cannot import {module!r} ({e})") from None
    try:
        fn: Callable[..., Any] = getattr(mod, attr)
    except AttributeError:
        raise SettingError("backbone", f"{spec!r}: module {module!r} has no {attr!r}") from None
    return fn


def create_backbone(
    name: str, *, num_classes: int, input_shape: Sequence[int], **kw: Any
) -> Backbone:
    """Build a registered backbone, or a user's ``package.module:factory``.

    A user factory is called with ``num_classes`` and ``input_shape`` keywords and returns a
    :class:`Backbone`, a ``(blocks, classifier)`` pair, or a plain ``nn.Module`` that
    :func:`~hapi_dse.models.split.split_module` splits (an ``nn.Sequential`` of stages or a
    ResNet-style network); exit metadata is then probed.
    """
    if ":" not in name:
        return BACKBONES.create(name, num_classes=num_classes, input_shape=tuple(input_shape), **kw)
    out = load_factory(name)(num_classes=num_classes, input_shape=tuple(input_shape), **kw)
    if isinstance(out, Backbone):
        return out
    if isinstance(out, nn.Module):
        from hapi_dse.models.split import split_module

        blocks, classifier = split_module(out, input_shape, f"--backbone {name!r}")
        return Backbone(blocks, classifier, _probe_exits(blocks, input_shape), source=out)
    try:
        blocks, classifier = out
    except (TypeError, ValueError):
        raise SettingError(
            "backbone",
            f"{name!r}: the factory must return an nn.Module, a Backbone or (blocks, classifier)",
        ) from None
    blocks = list(blocks)
    return Backbone(blocks, classifier, _probe_exits(blocks, input_shape))


def load_backbone_state(bb: Backbone, state: dict[str, torch.Tensor], where: str) -> None:
    """Load ``state`` into ``bb``: hapi's own keys (``blocks.0...``), or, for a backbone
    split from a user's module, that module's keys (as ``torch.save(model.state_dict())``
    writes them), whichever ``state`` shares more keys with. Any key missing, unexpected or
    of another shape is refused in one line that names it."""
    target: nn.Module = bb
    what = "the backbone"
    if bb.source is not None:
        own = len(state.keys() & bb.state_dict().keys())
        if len(state.keys() & bb.source.state_dict().keys()) > own:
            target, what = bb.source, f"the factory's {type(bb.source).__name__}"
    expected = target.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = [
            f"{label} key {keys[0]!r}" + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")
            for label, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise ArtefactError(f"{where}: does not fit {what}: {', '.join(parts)}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ArtefactError(
                f"{where}: does not fit {what}: {k!r} has shape {tuple(state[k].shape)}, "
                f"expected {tuple(v.shape)}"
            )
    target.load_state_dict(state)
