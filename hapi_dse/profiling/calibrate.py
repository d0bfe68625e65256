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

from hapi_dse.profiling.modelled import NodeCost, estimate_s, graph_costs
from hapi_dse.profiling.specs import DeviceSpec
from hapi_dse.profiling.timing import TimingSettings, make_session, time_sessions

log = logging.getLogger(__name__)

OPSET = 18


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
        g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hapi-calibrate"
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
        op_flops_per_s={
            "Conv": float(v["F_Conv"]),
            "DepthwiseConv": float(v["F_DepthwiseConv"]),
            "Gemm": float(v["F_Gemm"]),
            "MatMul": float(v["F_Gemm"]),
        },
        op_overhead_us_by_type={
            "Conv": float(v["ov_Conv"]),
            "DepthwiseConv": float(v["ov_DepthwiseConv"]),
            "Gemm": float(v["ov_Gemm"]),
            "MatMul": float(v["ov_Gemm"]),
            "ReduceMean": float(v["ov_ReduceMean"]),
            "GlobalAveragePool": float(v["ov_ReduceMean"]),
            "Reshape": float(v["ov_Reshape"]),
            "Flatten": float(v["ov_Reshape"]),
        },
    )


def fit_spec(
    costs: list[list[NodeCost]],
    measured_s: np.ndarray,
    *,
    call_overhead_us: float,
    name: str = "host",
    active_power_w: float = 15.0,
    threads: int = 1,
    description: str = "",
) -> tuple[DeviceSpec, float]:
    """Least squares on log latency; returns the spec and the fit's mean abs relative error."""
    from scipy.optimize import least_squares

    log_meas = np.log(measured_s)

    def residual(theta: np.ndarray) -> np.ndarray:
        spec = spec_from_params(name, theta, call_overhead_us, active_power_w, threads, description)
        pred = np.array([estimate_s(c, spec) for c in costs])
        return np.log(pred) - log_meas

    theta0 = np.log(np.array(_INIT))
    res = least_squares(
        residual, theta0, method="trf", x_scale=1.0, max_nfev=400, bounds=(theta0 - 12, theta0 + 12)
    )
    spec = spec_from_params(name, res.x, call_overhead_us, active_power_w, threads, description)
    pred = np.array([estimate_s(c, spec) for c in costs])
    mape = float(np.mean(np.abs(pred - measured_s) / measured_s))
    return spec, mape


def calibrate(
    settings: TimingSettings, *, name: str = "host", active_power_w: float = 15.0, seed: int = 0
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
