"""Well-known whole networks as ONNX graphs, to check modelled latencies against published ones.

The device specs (``shipped_profiles/specs/*.toml``) model devices hapi cannot reach; the
figures published for those devices are whole-network latencies of a few standard
classifiers (``shipped_profiles/specs/published.toml``, :mod:`hapi_dse.profiling.published`).
This module builds those classifiers so the cost model can be run on exactly the graphs the
published figures measured: ImageNet classifiers at batch 1 with static shapes, random float32
weights from a seeded generator, and BatchNorm already folded into each Conv (a Conv with a bias
followed by ``Relu``, or ``Clip(0, 6)`` for ReLU6), as an exporter writes them for inference.

Channel counts, strides and layer counts follow the original definitions, so the Conv and Gemm
multiply-accumulates match the published figures (``tests/test_reference_nets.py`` checks them):

============  ================================================  ==============
name          definition                                        MACs published
============  ================================================  ==============
resnet18      He et al. 2015, torchvision ``resnet18``          1.81 G
resnet34      He et al. 2015, torchvision ``resnet34``          3.66 G
resnet50      torchvision ``resnet50`` (v1.5: stride on 3x3)    4.09 G
resnet50_v1   He et al. 2015 / Caffe (stride on the first 1x1)  3.8 G
mobilenet_v1  Howard et al. 2017, width 1.0, ReLU6              569 M
mobilenet_v2  Sandler et al. 2018, width 1.0                    300 M
============  ================================================  ==============

Only ``onnx`` and ``numpy`` are needed (no torch): ``build("resnet50")`` returns an
``onnx.ModelProto`` with one input ``input`` (1, 3, H, W) and one output ``logits`` (1, 1000).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hapi_dse.errors import unknown_name
from hapi_dse.onnx_tools import DEFAULT_OPSET

NUM_CLASSES = 1000
INPUT_SIZE = 224


@dataclass(frozen=True)
class _T:
    """A tensor of the graph being built: its name, channels and (square) spatial size."""

    name: str
    c: int
    hw: int


@dataclass
class _Graph:
    """Accumulates nodes and initializers; every layer method returns its output tensor."""

    seed: int
    nodes: list[Any] = field(default_factory=list)
    inits: list[Any] = field(default_factory=list)
    count: int = 0
    input_size: int = INPUT_SIZE

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def _name(self, op: str) -> str:
        self.count += 1
        return f"{op}_{self.count}"

    def _param(self, name: str, shape: tuple[int, ...], std: float) -> str:
        from onnx import numpy_helper

        values = (self.rng.standard_normal(shape) * std).astype(np.float32)
        self.inits.append(numpy_helper.from_array(values, name))
        return name

    def _node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        name = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: _T, cout: int, k: int, stride: int = 1, groups: int = 1, act: str = "") -> _T:
        """Conv (BatchNorm folded: weight and bias) with 'same' padding, then ``act``:
        ``"relu"``, ``"relu6"`` or ``""`` (linear)."""
        fan_in = x.c // groups * k * k
        name = self._name("conv")
        w = self._param(f"{name}.weight", (cout, x.c // groups, k, k), math.sqrt(2.0 / fan_in))
        b = self._param(f"{name}.bias", (cout,), 0.01)
        pad = k // 2
        attrs: dict[str, Any] = {
            "kernel_shape": [k, k],
            "strides": [stride, stride],
            "pads": [pad, pad, pad, pad],
        }
        if groups > 1:
            attrs["group"] = groups
        y = self._node("Conv", [x.name, w, b], **attrs)
        out = _T(y, cout, (x.hw + 2 * pad - k) // stride + 1)
        return self.act(out, act)

    def act(self, x: _T, kind: str) -> _T:
        if kind == "relu":
            return _T(self._node("Relu", [x.name]), x.c, x.hw)
        if kind == "relu6":
            return _T(self._node("Clip", [x.name, "relu6_min", "relu6_max"]), x.c, x.hw)
        return x

    def add(self, branch: _T, skip: _T, act: str = "") -> _T:
        """Residual sum; the branch's Conv output comes first, as exporters write it."""
        return self.act(_T(self._node("Add", [branch.name, skip.name]), branch.c, branch.hw), act)

    def maxpool(self, x: _T) -> _T:
        """The ResNet stem's 3x3 stride-2 max pooling."""
        y = self._node("MaxPool", [x.name], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
        return _T(y, x.c, (x.hw + 2 - 3) // 2 + 1)

    def classifier(self, x: _T, name: str) -> Any:
        """GlobalAveragePool, Flatten and a Gemm to the ImageNet classes; returns the model."""
        from onnx import TensorProto, helper, numpy_helper

        pooled = self._node("GlobalAveragePool", [x.name])
        flat = self._node("Flatten", [pooled], axis=1)
        w = self._param("fc.weight", (NUM_CLASSES, x.c), math.sqrt(1.0 / x.c))
        b = self._param("fc.bias", (NUM_CLASSES,), 0.01)
        self.nodes.append(helper.make_node("Gemm", [flat, w, b], ["logits"], name="fc", transB=1))
        for bound, value in (("relu6_min", 0.0), ("relu6_max", 6.0)):
            if any(bound in n.input for n in self.nodes):
                self.inits.append(numpy_helper.from_array(np.array(value, np.float32), bound))
        size = self.input_size
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, NUM_CLASSES])],
            initializer=self.inits,
        )
        return helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", DEFAULT_OPSET)],
            producer_name="hapi-reference-nets",
        )

    def input(self, size: int) -> _T:
        self.input_size = size
        return _T("input", 3, size)


# --- ResNet -------------------------------------------------------------------------------------


def _basic_block(g: _Graph, x: _T, width: int, stride: int) -> _T:
    """Two 3x3 convolutions; a 1x1 projection shortcut when the shape changes."""
    y = g.conv(x, width, 3, stride, act="relu")
    y = g.conv(y, width, 3)
    skip = g.conv(x, width, 1, stride) if stride != 1 or x.c != width else x
    return g.add(y, skip, act="relu")


def _bottleneck(g: _Graph, x: _T, width: int, stride: int, stride_in_1x1: bool = False) -> _T:
    """1x1 reduce, 3x3, 1x1 expand (x4); the stride on the 3x3 (v1.5) or the first 1x1 (v1)."""
    y = g.conv(x, width, 1, stride if stride_in_1x1 else 1, act="relu")
    y = g.conv(y, width, 3, 1 if stride_in_1x1 else stride, act="relu")
    y = g.conv(y, 4 * width, 1)
    skip = g.conv(x, 4 * width, 1, stride) if stride != 1 or x.c != 4 * width else x
    return g.add(y, skip, act="relu")


def _resnet(
    name: str,
    block: Callable[[_Graph, _T, int, int], _T],
    layers: tuple[int, int, int, int],
    seed: int,
    input_size: int,
) -> Any:
    g = _Graph(seed)
    x = g.conv(g.input(input_size), 64, 7, 2, act="relu")
    x = g.maxpool(x)
    for stage, (blocks, width) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
        for i in range(blocks):
            x = block(g, x, width, 2 if stage > 0 and i == 0 else 1)
    return g.classifier(x, name)


def resnet18(seed: int = 0, input_size: int = INPUT_SIZE) -> Any:
    """ResNet-18 (basic blocks 2-2-2-2), as torchvision defines it."""
    return _resnet("resnet18", _basic_block, (2, 2, 2, 2), seed, input_size)


def resnet34(seed: int = 0, input_size: int = INPUT_SIZE) -> Any:
    """ResNet-34 (basic blocks 3-4-6-3), as torchvision defines it."""
    return _resnet("resnet34", _basic_block, (3, 4, 6, 3), seed, input_size)


def resnet50(seed: int = 0, input_size: int = INPUT_SIZE) -> Any:
    """ResNet-50 v1.5 (bottlenecks 3-4-6-3, stride on the 3x3), as torchvision defines it."""
    return _resnet("resnet50", _bottleneck, (3, 4, 6, 3), seed, input_size)


def resnet50_v1(seed: int = 0, input_size: int = INPUT_SIZE) -> Any:
    """ResNet-50 v1 (stride on the first 1x1): the paper's and the Caffe model's (ncnn)."""
    v1 = functools.partial(_bottleneck, stride_in_1x1=True)
    return _resnet("resnet50_v1", v1, (3, 4, 6, 3), seed, input_size)


# --- MobileNets ---------------------------------------------------------------------------------

#: MobileNetV1 after the stem: (output channels, stride) of each depthwise-separable block
_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
              *[(512, 1)] * 5, (1024, 2), (1024, 1))  # fmt: skip

#: MobileNetV2 inverted residual stages: (expansion t, output channels c, repeats n, stride s)
_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
              (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def mobilenet_v1(seed: int = 0, input_size: int = INPUT_SIZE) -> Any:
    """MobileNetV1, width multiplier 1.0: a 3x3 stem, then 13 depthwise 3x3 + pointwise 1x1."""
    g = _Graph(seed)
    x = g.conv(g.input(input_size), 32, 3, 2, act="relu6")
    for cout, stride in _V1_BLOCKS:
        x = g.conv(x, x.c, 3, stride, groups=x.c, act="relu6")
        x = g.conv(x, cout, 1, act="relu6")
    return g.classifier(x, "mobilenet_v1")


def mobilenet_v2(seed: int = 0, input_size: int = INPUT_SIZE) -> Any:
    """MobileNetV2, width 1.0: inverted residuals (1x1 expand, depthwise 3x3, linear 1x1
    project; an Add skip when the shape is kept), then a 1x1 to 1280 channels."""
    g = _Graph(seed)
    x = g.conv(g.input(input_size), 32, 3, 2, act="relu6")
    for t, c, n, s in _V2_STAGES:
        for i in range(n):
            stride = s if i == 0 else 1
            y = g.conv(x, x.c * t, 1, act="relu6") if t != 1 else x
            y = g.conv(y, y.c, 3, stride, groups=y.c, act="relu6")
            y = g.conv(y, c, 1)
            x = g.add(y, x) if stride == 1 and x.c == c else y
    x = g.conv(x, 1280, 1, act="relu6")
    return g.classifier(x, "mobilenet_v2")


#: builders by name; each takes ``seed`` and ``input_size`` and returns an ``onnx.ModelProto``
REFERENCE_NETS: dict[str, Callable[..., Any]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet50_v1": resnet50_v1,
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
}


def build(name: str, seed: int = 0, input_size: int = INPUT_SIZE) -> Any:
    """The reference network ``name`` (a key of :data:`REFERENCE_NETS`) as an ONNX model."""
    if name not in REFERENCE_NETS:
        raise unknown_name("reference network", name, REFERENCE_NETS)
    return REFERENCE_NETS[name](seed=seed, input_size=input_size)
