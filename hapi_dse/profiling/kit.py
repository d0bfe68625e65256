"""Reference ONNX graphs for calibrating a device: built with ``onnx.helper``, no torch.

- :func:`micro_graphs`: the micro-benchmark grid ``hapi profile --calibrate`` times here:
  single operators of every class over a range of sizes (convolutions 1x1, 3x3, depthwise;
  pools; element-wise; concat; matrix-vector products), residual units, pooled classifiers,
  and the no-op graph (the bare ``session.run`` cost).
- :func:`random_cnn`: a small CNN of random cells (conv 1x1 / 3x3, depthwise-separable,
  3x3 max/avg pool, skip; random widths, 28-64 px inputs), as NAS benchmarks draw them.
- :func:`calibration_kit`: what ``hapi calibrate --export-kit`` writes for a device that is
  not this machine: the no-op graph, a few graphs chosen so that each operator class
  dominates one of them, and a few whole random CNNs; few enough to time on a phone by hand.

Every graph is float32, batch 1, with static shapes and seeded random weights; its
convolutions carry a bias and a fused activation, as an exporter writes a network whose
BatchNorm is folded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hapi_dse.onnx_tools import DEFAULT_OPSET

NOOP = "noop"


@dataclass
class Bench:
    name: str
    model: Any  # onnx.ModelProto


class _Builder:
    """Nodes, weights and fresh tensor names of one graph."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}{self._n}"

    def weight(self, shape: list[int]) -> str:
        from onnx import numpy_helper

        n = self.name("w")
        arr = (self.rng.standard_normal(shape) * 0.1).astype(np.float32)
        self.inits.append(numpy_helper.from_array(arr, n))
        return n

    def const(self, values: list[int]) -> str:
        from onnx import numpy_helper

        n = self.name("k")
        self.inits.append(numpy_helper.from_array(np.array(values, np.int64), n))
        return n

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def conv(
        self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, act: bool = True
    ) -> str:
        w, b = self.weight([cout, cin // group, k, k]), self.weight([cout])
        y = self.op(
            "Conv",
            [x, w, b],
            kernel_shape=[k, k],
            pads=[k // 2] * 4,
            strides=[stride, stride],
            group=group,
        )
        return self.op("Relu", [y]) if act else y

    def pool(self, x: str, kind: str, k: int = 3, stride: int = 1) -> str:
        return self.op(kind, [x], kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride] * 2)

    def classifier(self, x: str, c: int, classes: int = 10) -> str:
        g = self.op("GlobalAveragePool", [x])
        f = self.op("Flatten", [g])
        return self.op("Gemm", [f, self.weight([classes, c]), self.weight([classes])], transB=1)

    def model(self, name: str, x_shape: list[int], y: str) -> Any:
        from onnx import TensorProto, helper, shape_inference

        if y == "x":
            self.nodes.append(helper.make_node("Identity", [y], ["y"]))
        else:  # the last node writes the graph's output
            last = next(n for n in reversed(self.nodes) if y in n.output)
            last.output[list(last.output).index(y)] = "y"
        g = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            initializer=self.inits,
        )
        m = helper.make_model(
            g, opset_imports=[helper.make_opsetid("", DEFAULT_OPSET)], producer_name="hapi-kit"
        )
        return shape_inference.infer_shapes(m)


def noop_graph() -> Bench:
    b = _Builder(np.random.default_rng(0))
    return Bench(NOOP, b.model(NOOP, [1, 16, 8, 8], "x"))


def micro_graphs(seed: int = 0) -> list[Bench]:
    """The micro-benchmark grid (about 90 graphs), the no-op graph first."""
    rng = np.random.default_rng(seed)
    out = [noop_graph()]

    def add(name: str, shape: list[int], build: Any) -> None:
        b = _Builder(rng)
        out.append(Bench(name, b.model(name, shape, build(b, "x"))))

    for c in (8, 16, 32, 64, 128):
        for h in (4, 8, 16, 32):
            if c * h * h > 64 * 32 * 32:
                continue
            s = [1, c, h, h]
            for k in (1, 3):
                add(f"conv{k}x{k}_c{c}_h{h}", s, lambda b, x, c=c, k=k: b.conv(x, c, c, k))
            add(f"dwconv_c{c}_h{h}", s, lambda b, x, c=c: b.conv(x, c, c, 3, group=c))
            if h >= 8:
                add(f"maxpool_c{c}_h{h}", s, lambda b, x: b.pool(x, "MaxPool"))
                add(f"avgpool_c{c}_h{h}", s, lambda b, x: b.pool(x, "AveragePool"))
    for c in (16, 32, 64):
        for h in (4, 8, 16):

            def res(b: _Builder, x: str, c: int = c) -> str:
                y = b.conv(b.conv(x, c, c, 3), c, c, 3, act=False)
                return b.op("Relu", [b.op("Add", [y, x])])

            add(f"resunit_c{c}_h{h}", [1, c, h, h], res)
    for kdim in (16, 64, 256, 1024):
        for ndim in (10, 128, 512):
            add(
                f"gemm_k{kdim}_n{ndim}",
                [1, kdim],
                lambda b, x, k=kdim, n=ndim: b.op(
                    "Gemm", [x, b.weight([n, k]), b.weight([n])], transB=1
                ),
            )
    for c in (16, 64, 256):
        for h in (4, 16):
            add(f"poolfc_c{c}_h{h}", [1, c, h, h], lambda b, x, c=c: b.classifier(x, c))
    for side in (8, 32, 64):
        s = [1, 16, side, side]
        add(f"add_{side}", s, lambda b, x: b.op("Add", [x, x]))
        add(f"relu_{side}", s, lambda b, x: b.op("Relu", [x]))
        add(f"sigmoid_{side}", s, lambda b, x: b.op("Sigmoid", [x]))
        add(f"concat_{side}", s, lambda b, x: b.op("Concat", [x, x], axis=1))
        add(f"gap_{side}", s, lambda b, x: b.op("GlobalAveragePool", [x]))
    return out


def random_cnn(rng: np.random.Generator, name: str) -> Bench:
    """A small CNN of random cells: a 3x3 stem, 2-4 cells (each a 4-node DAG whose edges
    are conv 1x1 / 3x3, depthwise-separable 3x3, max/avg pool 3x3 or skip, summed at each
    node), a strided 3x3 conv doubling the width between cells, a pooled classifier."""
    size = int(rng.choice([28, 32, 40, 48, 56, 64]))
    cin = int(rng.choice([1, 3]))
    width = int(rng.choice([8, 16, 24, 32, 48]))
    cells = int(rng.integers(2, 5))
    b = _Builder(rng)
    x = b.conv("x", cin, width, 3, stride=int(rng.choice([1, 2])))
    edges = ("conv1x1", "conv3x3", "sepconv3x3", "maxpool", "avgpool", "skip")
    for cell in range(cells):
        nodes = [x]
        for j in range(1, 4):
            terms = []
            for i in range(j):
                kind = edges[int(rng.integers(len(edges)))]
                v = nodes[i]
                if kind == "conv1x1":
                    terms.append(b.conv(v, width, width, 1))
                elif kind == "conv3x3":
                    terms.append(b.conv(v, width, width, 3))
                elif kind == "sepconv3x3":
                    d = b.conv(v, width, width, 3, group=width)
                    terms.append(b.conv(d, width, width, 1))
                elif kind in ("maxpool", "avgpool"):
                    terms.append(b.pool(v, "MaxPool" if kind == "maxpool" else "AveragePool"))
                else:
                    terms.append(v)
            acc = terms[0]
            for t in terms[1:]:
                acc = b.op("Add", [acc, t])
            nodes.append(acc)
        x = nodes[-1]
        if cell < cells - 1 and width < 96:
            x = b.conv(x, width, width * 2, 3, stride=2)
            width *= 2
    y = b.classifier(x, width)
    return Bench(name, b.model(name, [1, cin, size, size], y))


def random_cnns(count: int, seed: int = 0) -> list[Bench]:
    rng = np.random.default_rng(seed)
    return [random_cnn(rng, f"cnn{i:03d}") for i in range(count)]


#: micro-benchmark graphs in the kit: each separates one operator class from the others
KIT_MICRO = (
    "conv3x3_c32_h16",
    "conv3x3_c64_h32",
    "conv1x1_c64_h32",
    "conv1x1_c16_h16",
    "dwconv_c64_h32",
    "dwconv_c16_h16",
    "maxpool_c64_h32",
    "avgpool_c32_h16",
    "gemm_k1024_n512",
    "gemm_k256_n10",
    "resunit_c32_h16",
    "poolfc_c256_h16",
    "add_64",
    "sigmoid_64",
    "concat_64",
)
KIT_CNNS = 4


def calibration_kit(seed: int = 0) -> list[Bench]:
    """The kit ``hapi calibrate --export-kit`` writes: the no-op graph, :data:`KIT_MICRO`,
    and :data:`KIT_CNNS` whole random CNNs (20 graphs)."""
    micro = {b.name: b for b in micro_graphs(seed)}
    return [
        micro[NOOP],
        *(micro[n] for n in KIT_MICRO),
        *random_cnns(KIT_CNNS, seed=seed + 1000),
    ]
