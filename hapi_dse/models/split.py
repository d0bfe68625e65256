"""Splitting a user's plain ``nn.Module`` into blocks and a final classifier, where safe.

Two shapes of network are split, the submodules shared (not copied) with the original:

- an ``nn.Sequential`` of stages: each child is a block, except the trailing layers from
  the first pooling, flatten or linear layer after the last stage on (pooling, flatten,
  linear, dropout and activations), which are the final classifier; activations and dropout
  between the last stage and that layer join the last stage's block;
- a ResNet-style module: ``layer1`` .. ``layerN`` are ``nn.Sequential`` of residual blocks,
  each of them a block; the children registered before a residual block (the stem:
  conv1/bn1/relu/maxpool, or anything between two layers) run in front of it, inside its
  block; the children after the last layer (avgpool, fc...) are the final classifier, which
  flattens before its first linear layer as a ResNet's ``forward`` does.

Either split is checked on a random input (eval mode): each block must give an
``(N, C, H, W)`` map and the chained blocks and classifier must reproduce the module's own
output. Otherwise the split is refused in one line saying how to split it by hand.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from hapi_dse.errors import UsageError, first_line

_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)
#: what starts a Sequential's classifier tail
_TAIL_START = (*_POOLS, nn.Flatten, nn.Linear)
#: what else the tail may hold after its start
_TAIL_TYPES = (
    *_TAIL_START,
    nn.Dropout,
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.LeakyReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Identity,
)
_LAYER = re.compile(r"layer(\d+)$")
_HOW = (
    "return (blocks, classifier) from the factory instead: blocks, in order, each mapping "
    "(N, C, H, W) to (N, C, H, W), and a classifier mapping the last block's output to logits"
)


class Tail(nn.Module):
    """The final classifier of a split module: its modules in order, the input flattened
    before the first linear layer when it is still a map (``torch.flatten(x, 1)`` in a
    ResNet's ``forward``)."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.layers:
            if isinstance(m, nn.Linear) and x.dim() > 2:
                x = torch.flatten(x, 1)
            x = m(x)
        return x


def split_module(
    module: nn.Module, input_shape: Sequence[int], where: str
) -> tuple[list[nn.Module], nn.Module]:
    """``(blocks, classifier)`` of ``module``, an ``nn.Sequential`` of stages or a
    ResNet-style network (see the module's docstring), checked to reproduce its output.

    ``where`` starts the refusal's message (``--backbone 'pkg.mod:make'``).
    """
    name = type(module).__name__
    try:
        if isinstance(module, nn.Sequential):
            blocks, classifier = _split_sequential(module)
        elif "layer1" in dict(module.named_children()):
            blocks, classifier = _split_resnet(module)
        else:
            raise _Refusal(
                "it is neither an nn.Sequential of stages nor a ResNet-style module "
                "(a stem, layer1..layerN, then pooling and a linear classifier)"
            )
        _check(module, blocks, classifier, input_shape)
    except _Refusal as e:
        raise UsageError(f"{where}: cannot split {name} into blocks safely: {e}; {_HOW}") from None
    return blocks, classifier


class _Refusal(Exception):
    pass


def _split_sequential(module: nn.Sequential) -> tuple[list[nn.Module], nn.Module]:
    children = list(module.children())
    end = len(children)  # children[end:] may form the classifier
    while end > 0 and isinstance(children[end - 1], _TAIL_TYPES):
        end -= 1
    start = end  # the classifier starts at its first pooling, flatten or linear layer
    while start < len(children) and not isinstance(children[start], _TAIL_START):
        start += 1
    if start == len(children):
        raise _Refusal("it does not end in a classifier (pooling, flatten and linear layers)")
    if end == 0:
        raise _Refusal("it has no stage before its classifier (pooling, flatten, linear)")
    blocks = children[:end]
    if start > end:  # activations or dropout after the last stage stay with it
        blocks[-1] = nn.Sequential(blocks[-1], *children[end:start])
    return blocks, Tail(children[start:])


def _split_resnet(module: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    children = list(module.named_children())
    layers = [i for i, (n, _) in enumerate(children) if _LAYER.match(n)]
    numbers = [int(_LAYER.match(children[i][0]).group(1)) for i in layers]  # type: ignore[union-attr]
    if numbers != list(range(1, len(layers) + 1)):
        raise _Refusal(
            f"its layers are {', '.join(children[i][0] for i in layers)}: expected layer1, "
            "layer2, ... registered in that order"
        )
    blocks: list[nn.Module] = []
    before: list[nn.Module] = []  # what runs in front of the next residual block
    for i, (n, child) in enumerate(children[: layers[-1] + 1]):
        if i not in layers:
            before.append(child)
            continue
        if not isinstance(child, nn.Sequential) or len(child) == 0:
            raise _Refusal(f"{n} is a {type(child).__name__}: expected an nn.Sequential of blocks")
        for block in child:
            blocks.append(nn.Sequential(*before, block) if before else block)
            before = []
    tail = [c for _, c in children[layers[-1] + 1 :]]
    if not any(isinstance(c, nn.Linear) for c in tail):
        raise _Refusal("it has no linear classifier after its last layer (e.g. avgpool, fc)")
    return blocks, Tail(tail)


def _check(
    module: nn.Module,
    blocks: Sequence[nn.Module],
    classifier: nn.Module,
    input_shape: Sequence[int],
) -> None:
    """Refuse unless each block yields a map and the chain reproduces ``module``'s output
    on a random input, in eval mode (the module's mode is restored)."""
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            try:
                want = module(x.clone())
            except Exception as e:  # the user's code, on the shape hapi will feed it
                raise _Refusal(
                    f"its forward fails on an input of shape {tuple(x.shape)} ({first_line(e)})"
                ) from None
            if not isinstance(want, torch.Tensor) or want.dim() != 2:
                got = tuple(want.shape) if isinstance(want, torch.Tensor) else type(want).__name__
                raise _Refusal(f"its forward returns {got}, expected logits (N, classes)")
            y = x.clone()
            for i, block in enumerate(blocks):
                try:
                    y = block(y)
                except Exception as e:
                    raise _Refusal(f"block {i} fails on its own ({first_line(e)})") from None
                if not isinstance(y, torch.Tensor) or y.dim() != 4:
                    got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                    raise _Refusal(f"block {i} returns {got}, expected (N, C, H, W)")
            try:
                out = classifier(y)
            except Exception as e:
                raise _Refusal(
                    f"the classifier fails on the last block ({first_line(e)})"
                ) from None
            if out.shape != want.shape or not torch.allclose(out, want, rtol=1e-4, atol=1e-5):
                diff = (
                    f"max difference {(out - want).abs().max().item():.3g}"
                    if out.shape == want.shape
                    else f"shape {tuple(out.shape)} instead of {tuple(want.shape)}"
                )
                raise _Refusal(
                    f"its blocks chained do not reproduce its output ({diff}): its forward "
                    "does more than run its children in order"
                )
    finally:
        module.train(was_training)
