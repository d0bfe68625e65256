"""A design as torch modules that export to ONNX with the exit decisions inside.

:class:`DesignGraph` is the single-graph deployment: the stages of the design run in order
and after each exit a ``torch.cond`` (an ONNX ``If``) either returns that exit's logits or
runs the rest of the network, so a sample that exits early never computes the later blocks.
:class:`StageGraph` is one stage of the staged deployment (blocks, head and decision, no
control flow). :class:`ReferenceGraph` computes the same blocks, heads, decisions and final
classifier with no control flow at all: the yardstick for the cost of control flow.

Exit rules, computed in float32 exactly as the cost model defines them (DESIGN 2.3), with
``z`` an exit's logits and ``T`` its temperature (model.json ``temperatures``), come from the
policy registry (:mod:`hapi_dse.cost.policies`):

* a threshold policy (:class:`~hapi_dse.cost.policies.ThresholdPolicy`) exits when its score
  of ``z / T`` passes the exit's threshold, e.g. ``max_softmax``: ``max softmax(z / T) >=
  threshold``; ``entropy``: ``entropy(softmax(z / T)) / log(classes) <= threshold``; the
  rule is the policy's own, run here on torch tensors (:func:`fires`) and on numpy arrays
  (:func:`decide`);
* ``patience`` (the structural policy): exit when the predictions of the last ``p`` exits
  (this one included) agree; ``p`` is structural (baked into the graph), thresholds and
  temperatures are not used.

**Layout anchor.** onnxruntime's NCHWc layout transformer can only keep a residual chain in
its blocked layout when both inputs of each ``Add`` are produced in that layout; a tensor
that enters a subgraph (or a stage graph) from outside is plain NCHW, so every residual
``Add`` downstream falls back to NCHW with a reorder around each convolution. An identity
1x1 convolution at the entry of each subgraph (``layout_anchor=True``) gives the chain an
NCHWc source; it is exact (weights are the identity) and costs one small 1x1 convolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hapi_dse.cost.design import Design
from hapi_dse.cost.policies import NUMPY_OPS, Ops, ThresholdPolicy, get_policy
from hapi_dse.models.early_exit import EarlyExitNet


class IdentityConv(nn.Conv2d):
    """A 1x1 convolution with identity weights: exact, but gives onnxruntime an NCHWc anchor."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 1, bias=False)
        with torch.no_grad():
            self.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
        self.weight.requires_grad_(False)


class _TorchOps:
    """:class:`~hapi_dse.cost.policies.Ops` on torch tensors."""

    def div(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a / b

    def sub(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a - b

    def mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b

    def neg(self, a: torch.Tensor) -> torch.Tensor:
        return -a

    def exp(self, a: torch.Tensor) -> torch.Tensor:
        return torch.exp(a)

    def reciprocal(self, a: torch.Tensor) -> torch.Tensor:
        return torch.reciprocal(a)

    def max_keep(self, a: torch.Tensor) -> torch.Tensor:
        return a.amax(-1, keepdim=True)

    def sum(self, a: torch.Tensor) -> torch.Tensor:
        return a.sum(-1)

    def log_softmax(self, a: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(a, -1)

    def div_const(self, a: torch.Tensor, value: float, hint: str) -> torch.Tensor:
        return a / value

    def ge(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a >= b

    def le(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a <= b


_TORCH_OPS: Ops[torch.Tensor] = _TorchOps()


def fires(
    rule: ThresholdPolicy, logits: torch.Tensor, threshold: torch.Tensor, temperature: torch.Tensor
) -> torch.Tensor:
    """The exit rule for one sample's logits ``(1, C)``: a boolean tensor of shape ``(1,)``."""
    return rule.decision(_TORCH_OPS, logits, threshold, temperature, logits.shape[-1])


def exit_heads(design: Design) -> list[tuple[int, str]]:
    """The design's exit heads ``(position, head)``, in order: all a network graph needs
    besides the blocks and the final classifier."""
    return [(e.position, e.head) for e in design.exits]


def stage_plan(design: Design, num_blocks: int) -> list[tuple[int, int, tuple[int, str]]]:
    """Each stage's block range ``[lo, hi]`` and head ``(position, kind)``: one stage per
    exit (its head on its block), then the final stage, whose head ``(num_blocks - 1,
    "final")`` is the final classifier on the last block's output; an exit after the last
    block leaves that stage no blocks (``hi < lo``): the classifier then runs on the
    features the stage receives, the same tensor."""
    plan = []
    lo = 0
    for pos, head in exit_heads(design):
        plan.append((lo, pos, (pos, head)))
        lo = pos + 1
    plan.append((lo, num_blocks - 1, (num_blocks - 1, "final")))
    return plan


class _Stage(nn.Module):
    def __init__(
        self, net: EarlyExitNet, lo: int, hi: int, head: nn.Module, anchor: nn.Module
    ) -> None:
        super().__init__()
        self.anchor = anchor
        self.blocks = nn.Sequential(*[net.backbone.blocks[j] for j in range(lo, hi + 1)])
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.blocks(self.anchor(x))
        return h, self.head(h)


def build_stages(net: EarlyExitNet, design: Design, layout_anchor: bool) -> nn.ModuleList:
    """One module per stage (exits in order, then the final classifier).

    An exit after the last block leaves the final stage without blocks: it then runs the
    final classifier on the same features.
    """
    stages = nn.ModuleList()
    m = len(design.exits)
    for i, (lo, hi, (pos, kind)) in enumerate(stage_plan(design, net.backbone.num_blocks)):
        head = net.head(pos, kind) if i < m else net.backbone.classifier
        anchor: nn.Module = nn.Identity()
        if layout_anchor and lo > 0:
            anchor = IdentityConv(net.backbone.exits[lo - 1].channels)
        stages.append(_Stage(net, lo, hi, head, anchor))
    return stages


def input_names(design: Design) -> list[str]:
    """Graph inputs: the image, then per-exit thresholds and temperatures (threshold policies)."""
    if get_policy(design.policy).uses_threshold and design.exits:
        return ["input", "thresholds", "temperatures"]
    return ["input"]


class DesignGraph(nn.Module):
    """The whole design with its exit decisions as nested ``torch.cond`` (ONNX ``If``).

    ``forward(x[, thresholds, temperatures])`` returns ``(logits (1, C), exit_index (1,))``
    where ``exit_index`` is ``0..m-1`` for the design's exits and ``m`` for the final
    classifier. The graph's entry stage has no anchor; later stages have one when
    ``layout_anchor`` (see the module docstring). ``eager`` takes the branches in Python
    instead of ``torch.cond``: the same results, for checking an export against PyTorch
    (an eager ``torch.cond`` compiles its branches, about a second a call); not exportable.
    """

    def __init__(
        self, net: EarlyExitNet, design: Design, *, layout_anchor: bool = True, eager: bool = False
    ) -> None:
        super().__init__()
        self.eager = eager
        self.rule = get_policy(design.policy)
        self.patience = design.patience
        self.num_exits = len(design.exits)
        self.stages = build_stages(net, design, layout_anchor)

    def forward(self, x: torch.Tensor, *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._tail(0, x, tuple(params), None)

    def _tail(
        self, i: int, x: torch.Tensor, params: tuple[torch.Tensor, ...], prev: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, z = self.stages[i](x)
        if i == self.num_exits:
            return z, torch.full((1,), i, dtype=torch.int64)
        if isinstance(self.rule, ThresholdPolicy):
            thr, temps = params
            fire = fires(self.rule, z, thr[i], temps[i]).reshape(())
        else:  # patience: the window of the last predictions
            pred = z.argmax(-1)
            prev = pred if prev is None else torch.cat([prev, pred])[-max(self.patience, 1) :]
            if i + 1 < self.patience:  # cannot fire yet: no branch
                return self._tail(i + 1, h, params, prev)
            fire = (prev == pred).all().reshape(())
        operands = (z, h, *params) if prev is None else (z, h, prev, *params)

        def take(
            z: torch.Tensor, h: torch.Tensor, *rest: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            return z.clone(), torch.full((1,), i, dtype=torch.int64)

        def go_on(
            z: torch.Tensor, h: torch.Tensor, *rest: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if prev is None:
                return self._tail(i + 1, h, tuple(rest), None)
            return self._tail(i + 1, h, tuple(rest[1:]), rest[0])

        if self.eager:  # the same branches in Python: eager torch.cond compiles (~1 s a call)
            return take(*operands) if bool(fire) else go_on(*operands)
        out: tuple[torch.Tensor, torch.Tensor] = torch.cond(fire, take, go_on, operands)
        return out


class StageGraph(nn.Module):
    """One stage of the staged deployment: ``(features, logits, fire)`` with no control flow.

    The last stage returns ``(logits,)``. Under ``patience`` a stage returns its prediction
    (argmax) in place of ``fire`` and the runtime compares the window.
    """

    def __init__(self, stage: nn.Module, policy: str, last: bool) -> None:
        super().__init__()
        self.stage = stage
        self.rule = get_policy(policy)
        self.last = last

    def forward(self, x: torch.Tensor, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, z = self.stage(x)
        if self.last:
            return (z,)
        if isinstance(self.rule, ThresholdPolicy):
            thr, temp = params
            return h, z, fires(self.rule, z, thr, temp)
        return h, z, z.argmax(-1)


def stage_io(policy: str, last: bool) -> tuple[list[str], list[str]]:
    """Input and output names of a stage graph."""
    if last:
        return ["x"], ["logits"]
    if get_policy(policy).uses_threshold:
        return ["x", "threshold", "temperature"], ["features", "logits", "fire"]
    return ["x"], ["features", "logits", "prediction"]


class ReferenceGraph(nn.Module):
    """The design's blocks, heads, decisions and final classifier with no control flow.

    Returns the final logits, every exit's logits ``(m, C)`` and fire flags ``(m,)`` so that
    nothing is pruned: the same arithmetic as the deep path of :class:`DesignGraph`.
    """

    def __init__(self, net: EarlyExitNet, design: Design) -> None:
        super().__init__()
        self.rule = get_policy(design.policy)
        self.num_exits = len(design.exits)
        self.stages = build_stages(net, design, layout_anchor=False)

    def forward(self, x: torch.Tensor, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = x
        zs, flags = [], []
        for i, stage in enumerate(self.stages):
            h, z = stage(h)
            zs.append(z)
            if i < self.num_exits:
                if isinstance(self.rule, ThresholdPolicy):
                    flags.append(fires(self.rule, z, params[0][i], params[1][i]))
                else:
                    flags.append(z.argmax(-1) == zs[0].argmax(-1))
        if not flags:
            return (zs[-1],)
        return zs[-1], torch.cat(zs[:-1], 0), torch.cat(flags)


def decide(
    policy: str,
    patience: int,
    logits: Sequence[Any],
    thresholds: Sequence[float],
    temperatures: Sequence[float],
) -> Any:
    """Exit index per sample from per-exit logits ``(n, C)`` arrays, in float32 numpy.

    The same rule as the graphs, vectorised: used to find real samples for every path.
    """
    import numpy as np

    rule = get_policy(policy)
    m = len(logits) - 1
    n = logits[0].shape[0]
    fire = np.zeros((m + 1, n), bool)
    fire[m] = True
    preds = [np.asarray(z).argmax(-1) for z in logits]
    for i in range(m):
        if isinstance(rule, ThresholdPolicy):
            z = np.asarray(logits[i], np.float32)
            fire[i] = rule.decision(
                NUMPY_OPS,
                z,
                np.float32(thresholds[i]),
                np.float32(temperatures[i]),
                z.shape[-1],
            )
        else:
            if i + 1 >= patience:
                window = preds[i + 1 - patience : i + 1]
                fire[i] = np.all([p == window[-1] for p in window], axis=0)
    return np.argmax(fire, axis=0)
