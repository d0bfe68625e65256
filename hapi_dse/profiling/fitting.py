"""Fit a device spec's parameters to measured latencies of whole ONNX graphs.

The parameters are the cost model's (:func:`hapi_dse.profiling.modelled.estimate_s`): per
operator class an efficiency, an overhead and a parallel efficiency; one core's and all
cores' bandwidth; the fork/join and ``session.run`` costs. The peak ``flops_per_s`` is the
datasheet's and stays fixed. The fit is a maximum a posteriori estimate: least squares on
the log of the latency (relative error) plus a pull of every parameter towards the spec it
starts from, so that ten timings move what they can tell apart and leave the rest at the
datasheet's value; every parameter stays physical (efficiencies in (0, 1], parallel
efficiencies in [0, 1], bandwidths and overheads positive).

The maximum in ``max(compute, memory)`` and the minimum of one core and all cores are made
smooth while fitting and sharpened in steps (a continuation), so that a rate on the flat
side of a maximum still gets a gradient; the last step is the exact model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from hapi_dse.profiling.modelled import estimate_s
from hapi_dse.profiling.opcost import OP_CLASSES, GraphCosts
from hapi_dse.profiling.specs import DeviceSpec

_CONTINUATION = (2.0, 8.0, 32.0, None)
#: pull towards the start spec: a log-parameter off by a factor e weighs like a graph
#: mispredicted by this much (in log latency); parallel efficiencies per unit.
PRIOR_WEIGHT = 0.05
MIN_EFFICIENCY = 1e-4
#: in-cache streaming beats the device's DRAM bandwidth, by a bounded factor
MAX_MEMORY_EFFICIENCY = 8.0
#: least-squares iterations per continuation step (each one a numerical Jacobian)
MAX_ITERATIONS = 400


@dataclass(frozen=True)
class Timing:
    """One measured graph: its work, the thread count it ran at, and its latency."""

    name: str
    costs: GraphCosts
    threads: int
    seconds: float


@dataclass(frozen=True)
class FitResult:
    spec: DeviceSpec
    mape: float
    max_abs_rel_error: float
    residuals: dict[str, float]  # name@threads -> predicted / measured - 1


def _param_names() -> list[str]:
    return [
        *(f"eff:{c}" for c in OP_CLASSES),
        *(f"ov:{c}" for c in OP_CLASSES),
        *(f"pe:{c}" for c in OP_CLASSES),
        *(f"out:{c}" for c in OP_CLASSES),
        *(f"mem:{c}" for c in OP_CLASSES),
        "bw1",
        "bwtot",
        "fork",
        "tov",
        "call",
    ]


NAMES = _param_names()
_IDX = {n: i for i, n in enumerate(NAMES)}
_CLS = {c: i for i, c in enumerate(OP_CLASSES)}
_LINEAR = np.array([n.startswith("pe:") for n in NAMES])


def spec_to_theta(spec: DeviceSpec) -> np.ndarray:
    v = []
    for n in NAMES:
        kind, _, cls = n.partition(":")
        if kind == "eff":
            v.append(np.log(max(spec.efficiency.get(cls, 1.0), MIN_EFFICIENCY)))
        elif kind == "ov":
            v.append(np.log(max(spec.overhead_s(cls) * 1e6, 1e-3)))
        elif kind == "pe":
            v.append(spec.parallel(cls))
        elif kind == "mem":
            v.append(np.log(spec.memory_efficiency.get(cls, 1.0)))
        elif kind == "out":
            v.append(np.log(max(spec.output_ns.get(cls, 0.0), 1e-4)))
        elif kind == "bw1":
            v.append(np.log(spec.mem_bandwidth_bytes_per_s))
        elif kind == "bwtot":
            v.append(np.log(spec.total_bandwidth))
        elif kind == "fork":
            v.append(np.log(max(spec.fork_join_s * 1e6, 1e-3)))
        elif kind == "tov":
            v.append(np.log(max(spec.thread_op_overhead_us or 0.0, 1e-3)))
        else:
            v.append(np.log(max(spec.call_overhead_us, 1e-3)))
    return np.array(v, np.float64)


def theta_to_spec(theta: np.ndarray, base: DeviceSpec) -> DeviceSpec:
    def get(n: str) -> float:
        x = float(theta[_IDX[n]])
        return x if n.startswith("pe:") else float(np.exp(x))

    return replace(
        base,
        efficiency={c: get(f"eff:{c}") for c in OP_CLASSES},
        class_overhead_us={c: get(f"ov:{c}") for c in OP_CLASSES},
        parallel_efficiency={c: get(f"pe:{c}") for c in OP_CLASSES},
        output_ns={c: get(f"out:{c}") for c in OP_CLASSES},
        memory_efficiency={c: get(f"mem:{c}") for c in OP_CLASSES},
        mem_bandwidth_bytes_per_s=get("bw1"),
        mem_bandwidth_total_bytes_per_s=get("bwtot"),
        thread_overhead_us=get("fork"),
        thread_op_overhead_us=get("tov"),
        call_overhead_us=get("call"),
        path=None,
    )


class _Nodes:
    """Every node of every timing as arrays: the model over all timings in a few numpy
    operations (a fit evaluates it thousands of times)."""

    def __init__(self, timings: Sequence[Timing], flops_per_s: float) -> None:
        sample, cls, flops, traffic, counted, threads, outs = [], [], [], [], [], [], []
        for s, t in enumerate(timings):
            for c in t.costs:
                sample.append(s)
                cls.append(_CLS[c.cls])
                flops.append(float(c.flops))
                outs.append(float(c.outputs))
                traffic.append(float(c.bytes))
                counted.append(0.0 if c.fused else 1.0)
                threads.append(float(t.threads))
        self.n = len(timings)
        self.sample = np.asarray(sample, np.int64)
        self.cls = np.asarray(cls, np.int64)
        self.compute1 = np.asarray(flops) / flops_per_s  # seconds at efficiency 1
        self.traffic = np.asarray(traffic)
        self.counted = np.asarray(counted)
        self.threads = np.asarray(threads)
        self.multi = self.threads > 1
        self.outputs = np.asarray(outs)

    def seconds(self, theta: np.ndarray, p: float | None) -> np.ndarray:
        k = len(OP_CLASSES)
        eff = np.exp(theta[0:k])
        ov = np.exp(theta[k : 2 * k]) * 1e-6
        pe = theta[2 * k : 3 * k]
        per_out = self.outputs * np.exp(theta[3 * k : 4 * k])[self.cls] * 1e-9
        mem = np.exp(theta[4 * k : 5 * k])[self.cls]
        bw1, bwtot = np.exp(theta[_IDX["bw1"]]), np.exp(theta[_IDX["bwtot"]])
        fork, call = np.exp(theta[_IDX["fork"]]) * 1e-6, np.exp(theta[_IDX["call"]]) * 1e-6
        compute = self.compute1 / eff[self.cls]
        one = _smax(compute, self.traffic / (np.minimum(bw1, bwtot) * mem), p) + per_out
        speedup = 1.0 + (self.threads - 1.0) * pe[self.cls]
        bw = np.minimum(bw1 * self.threads, bwtot) * mem
        split = _smax(compute / speedup, self.traffic / bw, p) + per_out / speedup + fork
        work = np.where(self.multi, _smin(one, split, p), one)
        tov = np.exp(theta[_IDX["tov"]]) * 1e-6
        per_node = self.counted * (ov[self.cls] + (self.threads - 1.0) * tov) + work
        return call + np.bincount(self.sample, per_node, minlength=self.n)


def _smax(a: np.ndarray, b: np.ndarray, p: float | None) -> np.ndarray:
    if p == 1.0:
        return a + b
    if p is None:
        return np.maximum(a, b)
    top = np.maximum(np.maximum(a, b), 1e-30)
    return top * ((a / top) ** p + (b / top) ** p) ** (1.0 / p)


def _smin(a: np.ndarray, b: np.ndarray, p: float | None) -> np.ndarray:
    if p is None:
        return np.minimum(a, b)
    low = np.maximum(np.minimum(a, b), 1e-30)
    return low * ((low / np.maximum(a, 1e-30)) ** p + (low / np.maximum(b, 1e-30)) ** p) ** (
        -1.0 / p
    )


THREAD_PARAMS = ("pe", "fork", "tov", "bwtot")


def fit_spec(
    timings: Sequence[Timing],
    start: DeviceSpec,
    *,
    prior_weight: float = PRIOR_WEIGHT,
    fixed: Sequence[str] = (),
) -> FitResult:
    """Fit ``start``'s parameters to ``timings``; ``fixed`` names parameters kept as they are
    (:data:`NAMES`, e.g. ``"call"`` when a no-op graph measured it).

    Timings at one thread and at more are fitted in two steps: the one-thread parameters on
    the one-thread timings, then the thread parameters (:data:`THREAD_PARAMS`) on the rest;
    the single-core model does not depend on the thread parameters, and two small fits
    converge where one large one crawls. Timings at more threads only are fitted at once.
    """
    if not timings:
        raise ValueError("no timings to fit")
    mismatch = {t.costs.channel_block for t in timings} - {start.channel_block}
    if mismatch:
        raise ValueError(
            f"timings costed with channel_block {mismatch}, the spec has {start.channel_block}"
        )
    single = [t for t in timings if t.threads == 1]
    multi = [t for t in timings if t.threads > 1]
    theta = spec_to_theta(start)
    if single and multi:
        threads = [n for n in NAMES if n.partition(":")[0] in THREAD_PARAMS]
        theta = _fit(single, start, theta, prior_weight, fixed=(*fixed, *threads))
        others = [n for n in NAMES if n not in threads]
        theta = _fit(multi, start, theta, prior_weight, fixed=(*fixed, *others))
    else:
        theta = _fit(timings, start, theta, prior_weight, fixed=tuple(fixed))
    spec = theta_to_spec(theta, start)
    return _result(timings, spec)


def _fit(
    timings: Sequence[Timing],
    start: DeviceSpec,
    theta_start: np.ndarray,
    prior_weight: float,
    fixed: Sequence[str],
) -> np.ndarray:
    """One least-squares fit from ``theta_start``, pulled towards ``start``'s values."""
    from scipy.optimize import least_squares

    nodes = _Nodes(timings, start.flops_per_s)
    log_meas = np.log(np.array([t.seconds for t in timings], np.float64))
    present = {c.cls for t in timings for c in t.costs}
    multi = any(t.threads > 1 for t in timings)

    def informed(name: str) -> bool:
        """Whether the timings can move this parameter: its class ran, and for the
        thread parameters some timing used more than one thread."""
        kind, _, cls = name.partition(":")
        if kind in THREAD_PARAMS and not multi:
            return False
        return not cls or cls in present

    free = np.array([n not in fixed and informed(n) for n in NAMES])
    prior = spec_to_theta(start)
    lo = np.where(_LINEAR, 0.0, prior - 12.0)
    hi = np.where(_LINEAR, 1.0, prior + 12.0)
    k = len(OP_CLASSES)
    hi[0:k] = 0.0  # efficiency <= 1
    lo[0:k] = np.log(MIN_EFFICIENCY)
    mem = slice(4 * k, 5 * k)
    lo[mem], hi[mem] = np.log(0.01), np.log(MAX_MEMORY_EFFICIENCY)
    prior = np.clip(prior, lo, hi)
    theta0 = np.clip(theta_start, lo, hi)
    if not free.any():
        return theta0

    def full(x: np.ndarray) -> np.ndarray:
        t = theta0.copy()
        t[free] = x
        return t

    x = theta0[free]
    for p in _CONTINUATION:

        def residual(x: np.ndarray, p: float | None = p) -> np.ndarray:
            t = full(x)
            data = np.log(nodes.seconds(t, p)) - log_meas
            return np.concatenate([data, (t - prior)[free] * prior_weight])

        x = least_squares(
            residual,
            x,
            method="trf",
            x_scale="jac",
            ftol=1e-8,
            xtol=1e-8,
            gtol=1e-8,
            max_nfev=MAX_ITERATIONS,
            bounds=(lo[free], hi[free]),
        ).x
    return full(x)


def _result(timings: Sequence[Timing], spec: DeviceSpec) -> FitResult:
    log_meas = np.log(np.array([t.seconds for t in timings], np.float64))
    pred = np.array([estimate_s(t.costs, spec, t.threads) for t in timings])
    meas = np.exp(log_meas)
    rel = pred / meas - 1.0
    return FitResult(
        spec=spec,
        mape=float(np.mean(np.abs(rel))),
        max_abs_rel_error=float(np.max(np.abs(rel))),
        residuals={f"{t.name}@{t.threads}": float(r) for t, r in zip(timings, rel, strict=True)},
    )


def errors(timings: Sequence[Timing], spec: DeviceSpec) -> dict[str, Any]:
    """How well ``spec`` predicts ``timings``: MAPE, share within 10 %, Spearman's rho."""
    from hapi_dse.profiling.runner import spearman

    pred = np.array([estimate_s(t.costs, spec, t.threads) for t in timings])
    meas = np.array([t.seconds for t in timings])
    rel = np.abs(pred / meas - 1.0)
    return {
        "graphs": len(timings),
        "mape": float(rel.mean()),
        "within_10pct": float((rel <= 0.10).mean()),
        "spearman": spearman(meas, pred),
        "median_ratio": float(np.median(pred / meas)),
    }
