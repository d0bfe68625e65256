"""Fit a device spec for this machine from a short micro-benchmark (``hapi profile --calibrate``).

The micro-benchmark is a fixed grid of small generic graphs built with ``onnx.helper``, not
the segments of any model: single convolutions (1x1, 3x3, depthwise) and conv-relu-conv
residual units over powers-of-two channel counts and sizes, matrix-vector products, pooled
classifiers (ReduceMean + Reshape + Gemm), element-wise adds, and an Identity graph (the
bare ``session.run`` cost). They are timed with the same protocol as a profile, and the
spec's figures are fitted to them by least squares on the log of the latency (relative
error), using the same roofline model as :mod:`hapi_dse.profiling.modelled`. The fitted spec
can then model this machine, so the model's error is measured where the truth is known.
"""

from __future__ import annotations

import logging
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.onnx_tools import DEFAULT_OPSET
from hapi_dse.profiling.modelled import NodeCost, estimate_s, graph_costs
from hapi_dse.profiling.specs import DEFAULT_ACTIVE_POWER_W, DeviceSpec
from hapi_dse.profiling.timing import TimingSettings, make_session, time_sessions

log = logging.getLogger(__name__)


@dataclass
class Bench:
    name: str
    model: Any  # onnx.ModelProto


def _graph(
    name: str,
    nodes: list[Any],
    inp: list[int],
    out: list[int],
    inits: list[Any],
    out_name: str = "y",
) -> Any:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, inp)
    y = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out)
    g = helper.make_graph(nodes, name, [x], [y], initializer=inits)
    return helper.make_model(
        g, opset_imports=[helper.make_opsetid("", DEFAULT_OPSET)], producer_name="hapi-calibrate"
    )


def _weight(name: str, shape: list[int], rng: np.random.Generator) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)


def _conv(
    x: str,
    y: str,
    cin: int,
    cout: int,
    k: int,
    stride: int,
    group: int,
    tag: str,
    rng: np.random.Generator,
    inits: list[Any],
) -> Any:
    from onnx import helper

    w = f"w_{tag}"
    b = f"b_{tag}"
    inits += [_weight(w, [cout, cin // group, k, k], rng), _weight(b, [cout], rng)]
    return helper.make_node(
        "Conv",
        [x, w, b],
        [y],
        kernel_shape=[k, k],
        pads=[k // 2] * 4,
        strides=[stride, stride],
        group=group,
    )


def benchmark_graphs(seed: int = 0) -> list[Bench]:
    """The fixed micro-benchmark grid (about 60 graphs)."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    out: list[Bench] = []
    out.append(
        Bench(
            "noop",
            _graph(
                "noop",
                [helper.make_node("Identity", ["x"], ["y"])],
                [1, 16, 8, 8],
                [1, 16, 8, 8],
                [],
            ),
        )
    )
    for c in (8, 16, 32, 64, 128):
        for h in (4, 8, 16, 32):
            if c * h * h > 64 * 32 * 32:
                continue
            for k in (1, 3):
                inits: list[Any] = []
                n = [
                    _conv("x", "c", c, c, k, 1, 1, "a", rng, inits),
                    helper.make_node("Relu", ["c"], ["y"]),
                ]
                out.append(
                    Bench(
                        f"conv{k}x{k}_c{c}_h{h}",
                        _graph("conv", n, [1, c, h, h], [1, c, h, h], inits),
                    )
                )
            inits = []
            n = [_conv("x", "y", c, c, 3, 1, c, "d", rng, inits)]
            out.append(
                Bench(f"dwconv_c{c}_h{h}", _graph("dw", n, [1, c, h, h], [1, c, h, h], inits))
            )
    for c in (16, 32, 64):
        for h in (4, 8, 16):
            inits = []
            n = [
                _conv("x", "a", c, c, 3, 1, 1, "1", rng, inits),
                helper.make_node("Relu", ["a"], ["b"]),
                _conv("b", "c", c, c, 3, 1, 1, "2", rng, inits),
                helper.make_node("Add", ["c", "x"], ["d"]),
                helper.make_node("Relu", ["d"], ["y"]),
            ]
            out.append(
                Bench(f"resunit_c{c}_h{h}", _graph("res", n, [1, c, h, h], [1, c, h, h], inits))
            )
    for kdim in (16, 64, 256, 1024):
        for ndim in (10, 128, 512):
            inits = [_weight("w", [ndim, kdim], rng), _weight("b", [ndim], rng)]
            n = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
            out.append(
                Bench(f"gemm_k{kdim}_n{ndim}", _graph("gemm", n, [1, kdim], [1, ndim], inits))
            )
    for c in (16, 64, 256):
        for h in (4, 16):
            from onnx import numpy_helper

            inits = [
                numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
                numpy_helper.from_array(np.array([1, c], np.int64), "shape"),
                _weight("w", [10, c], rng),
                _weight("b", [10], rng),
            ]
            n = [
                helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
                helper.make_node("Reshape", ["m", "shape"], ["f"]),
                helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1),
            ]
            out.append(
                Bench(f"poolfc_c{c}_h{h}", _graph("poolfc", n, [1, c, h, h], [1, 10], inits))
            )
    for numel_side in (8, 32, 64):
        n = [helper.make_node("Add", ["x", "x"], ["y"])]
        out.append(
            Bench(
                f"add_{numel_side}",
                _graph(
                    "add", n, [1, 16, numel_side, numel_side], [1, 16, numel_side, numel_side], []
                ),
            )
        )
    return out


# Parameters fitted, in log space: op overheads (default and per type), FLOP rates, bandwidth.
_PARAMS = (
    "op_overhead_us",
    "ov_Conv",
    "ov_DepthwiseConv",
    "ov_Gemm",
    "ov_ReduceMean",
    "ov_Reshape",
    "F_Conv",
    "F_DepthwiseConv",
    "F_Gemm",
    "F_default",
    "B",
)
_INIT = (1.0, 1.0, 1.0, 1.0, 1.0, 0.3, 2e10, 2e9, 5e9, 5e9, 1e10)
# which fitted parameter gives an op type its overhead / FLOP rate (others: the defaults)
_OVERHEAD_PARAM = {
    "Conv": "ov_Conv",
    "DepthwiseConv": "ov_DepthwiseConv",
    "Gemm": "ov_Gemm",
    "MatMul": "ov_Gemm",
    "ReduceMean": "ov_ReduceMean",
    "GlobalAveragePool": "ov_ReduceMean",
    "Reshape": "ov_Reshape",
    "Flatten": "ov_Reshape",
}
_RATE_PARAM = {
    "Conv": "F_Conv",
    "DepthwiseConv": "F_DepthwiseConv",
    "Gemm": "F_Gemm",
    "MatMul": "F_Gemm",
}
# Sharpness of the smooth maximum used while fitting (see _NodeMatrix), then the exact max.
_CONTINUATION = (2.0, 8.0, 32.0, None)
# Start points, as offsets of every log-parameter from _INIT (a slope across the parameters
# and its mirror too, so no start is special): the fit keeps the best end point.
_START_OFFSETS = (0.0, 1.0, -1.0)


def spec_from_params(
    name: str,
    theta: np.ndarray,
    call_overhead_us: float,
    active_power_w: float,
    threads: int,
    description: str,
) -> DeviceSpec:
    v = dict(zip(_PARAMS, np.exp(theta), strict=True))
    return DeviceSpec(
        name=name,
        description=description,
        threads=threads,
        flops_per_s=float(v["F_default"]),
        mem_bandwidth_bytes_per_s=float(v["B"]),
        op_overhead_us=float(v["op_overhead_us"]),
        call_overhead_us=call_overhead_us,
        active_power_w=active_power_w,
        op_flops_per_s={op: float(v[k]) for op, k in _RATE_PARAM.items()},
        op_overhead_us_by_type={op: float(v[k]) for op, k in _OVERHEAD_PARAM.items()},
    )


class _NodeMatrix:
    """Every node of every graph as arrays, so the roofline of :func:`estimate_s` is a few
    numpy operations over all graphs at once (the fit calls it thousands of times).

    With ``sharpness=None`` it is exactly :func:`estimate_s`; with a number ``p`` the
    ``max(compute, traffic)`` of each node is replaced by the smooth ``(a^p + b^p)^(1/p)``,
    which gives every FLOP rate and the bandwidth a gradient wherever they sit. A fit on the
    exact max can stall with a rate on the flat side of a max (its residuals do not move
    with it), at a point that explains the data worse than the truth does.
    """

    def __init__(self, costs: list[list[NodeCost]]) -> None:
        index = {k: i for i, k in enumerate(_PARAMS)}
        graph, ov, rate, flops, traffic, counted = [], [], [], [], [], []
        for g, nodes in enumerate(costs):
            for c in nodes:
                graph.append(g)
                ov.append(index[_OVERHEAD_PARAM.get(c.kind, "op_overhead_us")])
                rate.append(index[_RATE_PARAM.get(c.kind, "F_default")])
                flops.append(float(c.flops))
                traffic.append(float(c.bytes))
                counted.append(0.0 if c.fused else 1.0)
        self.graphs = len(costs)
        self.graph = np.asarray(graph, np.int64)
        self.ov = np.asarray(ov, np.int64)
        self.rate = np.asarray(rate, np.int64)
        self.flops = np.asarray(flops)
        self.traffic = np.asarray(traffic)
        self.counted = np.asarray(counted)
        self.bandwidth = index["B"]

    def seconds(self, theta: np.ndarray, call_s: float, sharpness: float | None) -> np.ndarray:
        v = np.exp(theta)
        compute = self.flops / v[self.rate]
        memory = self.traffic / v[self.bandwidth]
        if sharpness is None:
            work = np.maximum(compute, memory)
        else:
            top = np.maximum(np.maximum(compute, memory), 1e-30)
            work = top * ((compute / top) ** sharpness + (memory / top) ** sharpness) ** (
                1.0 / sharpness
            )
        per_node = self.counted * v[self.ov] * 1e-6 + work
        return call_s + np.bincount(self.graph, per_node, minlength=self.graphs)


def fit_spec(
    costs: list[list[NodeCost]],
    measured_s: np.ndarray,
    *,
    call_overhead_us: float,
    name: str = "host",
    active_power_w: float = DEFAULT_ACTIVE_POWER_W,
    threads: int = 1,
    description: str = "",
) -> tuple[DeviceSpec, float]:
    """Least squares on log latency; returns the spec and the fit's mean abs relative error.

    From each start point the fit follows a continuation: smooth maxima of growing sharpness,
    then the exact model, each stage starting where the previous one ended. The end point
    with the smallest error over the start points is kept.
    """
    from scipy.optimize import least_squares

    log_meas = np.log(np.asarray(measured_s, np.float64))
    nodes = _NodeMatrix(costs)
    call_s = call_overhead_us * 1e-6
    theta0 = np.log(np.array(_INIT))
    lo, hi = theta0 - 12, theta0 + 12
    slope = np.linspace(-1.0, 1.0, len(theta0))
    best: tuple[float, np.ndarray] | None = None
    for offset in _START_OFFSETS:
        theta = theta0 + offset * slope
        for sharpness in _CONTINUATION:

            def residual(t: np.ndarray, p: float | None = sharpness) -> np.ndarray:
                return np.log(nodes.seconds(t, call_s, p)) - log_meas

            theta = least_squares(
                residual,
                theta,
                method="trf",
                x_scale="jac",
                ftol=1e-12,
                xtol=1e-12,
                gtol=1e-12,
                max_nfev=2000,
                bounds=(lo, hi),
            ).x
        err = float(np.mean(np.abs(np.expm1(residual(theta, None)))))
        if best is None or err < best[0]:
            best = (err, theta)
    assert best is not None
    spec = spec_from_params(name, best[1], call_overhead_us, active_power_w, threads, description)
    pred = np.array([estimate_s(c, spec) for c in costs])
    mape = float(np.mean(np.abs(pred - measured_s) / measured_s))
    return spec, mape


def calibrate(
    settings: TimingSettings,
    *,
    name: str = "host",
    active_power_w: float = DEFAULT_ACTIVE_POWER_W,
    seed: int = 0,
) -> tuple[DeviceSpec, dict[str, Any]]:
    """Time the micro-benchmark on this machine and fit a spec; also return the raw figures."""
    import onnx

    benches = benchmark_graphs(seed)
    with tempfile.TemporaryDirectory(prefix="hapi-calib-") as tmp:
        paths = []
        for b in benches:
            p = Path(tmp) / f"{b.name}.onnx"
            onnx.save(b.model, str(p))
            paths.append(p)
        sessions = [make_session(p, settings) for p in paths]
        timings = time_sessions(sessions, settings)
        costs = [graph_costs(p) for p in paths]
    meas = np.array([t.median_ms * 1e-3 for t in timings])
    noop = meas[0]
    desc = (
        f"this machine ({platform.machine()}, {platform.processor() or platform.system()}), "
        f"{settings.threads} thread(s), fitted by 'hapi profile --calibrate'"
    )
    spec, fit_err = fit_spec(
        costs[1:],
        meas[1:],
        call_overhead_us=noop * 1e6,
        name=name,
        active_power_w=active_power_w,
        threads=settings.threads,
        description=desc,
    )
    report = {
        "graphs": len(benches),
        "fit_mean_abs_rel_error": fit_err,
        "call_overhead_us": noop * 1e6,
        "measured_us": {b.name: float(m * 1e6) for b, m in zip(benches, meas, strict=True)},
    }
    return spec, report
