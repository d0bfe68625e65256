"""Calibrating device specs from timings of whole ONNX graphs.

- :func:`calibrate`: ``hapi profile --calibrate``: time the micro-benchmark grid
  (:func:`hapi_dse.profiling.kit.micro_graphs`, not the segments of any model) on this
  machine at one thread and, when more are asked, at that many too; fit a spec from a
  neutral start (:data:`HOST_START`) with a weak pull towards it.
- :func:`export_kit`, :func:`measure_dir`, :func:`fit_measured`: ``hapi calibrate``'s
  workflow for a device that is not this machine: write the reference graphs, time them on
  the device into ``measured.csv`` (``model,latency_ms[,threads]``; any benchmark tool's
  timings may fill it instead), and fit the device's datasheet spec to them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import platform
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.errors import ArtefactError, UsageError
from hapi_dse.profiling.fitting import FitResult, Timing, fit_spec
from hapi_dse.profiling.kit import NOOP, Bench, calibration_kit, micro_graphs
from hapi_dse.profiling.opcost import graph_costs
from hapi_dse.profiling.specs import DEFAULT_ACTIVE_POWER_W, DeviceSpec
from hapi_dse.profiling.timing import TimingSettings, make_session, time_sessions
from hapi_dse.readers import read_csv
from hapi_dse.tempdirs import temp_dir

log = logging.getLogger(__name__)

MEASURED_CSV = "measured.csv"
MEASURED_COLUMNS = ("model", "latency_ms", "threads", "latency_p90_ms", "runs")
#: where a fit for this machine starts: a reference rate the efficiencies are relative to
#: (renormalised after the fit to the best class's), generic overheads and bandwidths
HOST_START = DeviceSpec(
    name="host",
    flops_per_s=1e12,
    mem_bandwidth_bytes_per_s=1e10,
    mem_bandwidth_total_bytes_per_s=2e10,
    op_overhead_us=1.0,
    call_overhead_us=5.0,
    thread_overhead_us=3.0,
    thread_op_overhead_us=0.5,
    active_power_w=DEFAULT_ACTIVE_POWER_W,
    efficiency={"conv": 0.1, "conv1x1": 0.05, "depthwise": 0.01, "gemm": 0.02},
)
#: the micro-benchmark grid is large: the start only breaks ties
HOST_PRIOR_WEIGHT = 0.005
COMPUTE_CLASSES = ("conv", "conv1x1", "depthwise", "gemm")


def _save(benches: list[Bench], out: Path) -> list[Path]:
    import onnx

    paths = []
    for b in benches:
        p = out / f"{b.name}.onnx"
        onnx.save(b.model, str(p))
        paths.append(p)
    return paths


def time_graphs(paths: list[Path], settings: TimingSettings) -> list[tuple[float, float, int]]:
    """(median s, p90 s, runs) of every graph, timed together with the profile's protocol."""
    sessions = [make_session(p, settings) for p in paths]
    return [
        (t.median_ms * 1e-3, t.p90_ms * 1e-3, t.runs) for t in time_sessions(sessions, settings)
    ]


def _renormalise(spec: DeviceSpec) -> DeviceSpec:
    """Peak := the best compute class's rate, efficiencies relative to it."""
    top = max(spec.efficiency.get(c, 1.0) for c in COMPUTE_CLASSES)
    return replace(
        spec,
        flops_per_s=spec.flops_per_s * top,
        efficiency={c: v / top for c, v in spec.efficiency.items()},
    )


def host_channel_block() -> int:
    """The channel block of onnxruntime's blocked (NCHWc) kernels on this CPU: 16 with
    AVX-512, 8 with AVX2, else 1 (none: Arm and older x86)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace").split()
    except OSError:
        return 1
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return 1
    return 16 if "avx512f" in flags else 8 if "avx2" in flags else 1


def calibrate(
    settings: TimingSettings,
    *,
    name: str = "host",
    active_power_w: float = DEFAULT_ACTIVE_POWER_W,
    seed: int = 0,
) -> tuple[DeviceSpec, dict[str, Any]]:
    """Time the micro-benchmark on this machine and fit a spec; also return the raw figures."""
    benches = micro_graphs(seed)
    thread_counts = sorted({1, settings.threads})
    block = host_channel_block()
    with temp_dir("hapi-calib-") as tmp:  # a killed calibration's is swept by the next
        paths = _save(benches, tmp)
        costs = [graph_costs(p, block) for p in paths]
        measured = {n: time_graphs(paths, replace(settings, threads=n)) for n in thread_counts}
    timings = []
    call_us = {}
    for n, results in measured.items():
        for b, c, (sec, _, _) in zip(benches, costs, results, strict=True):
            if b.name == NOOP:
                call_us[n] = sec * 1e6
            else:
                timings.append(Timing(b.name, c, n, sec))
    start = replace(
        HOST_START,
        name=name,
        threads=settings.threads,
        channel_block=block,
        call_overhead_us=call_us[settings.threads],
        active_power_w=active_power_w,
        description=(
            f"this machine ({platform.machine()}, {platform.processor() or platform.system()})"
            f", {settings.threads} thread(s), fitted by 'hapi profile --calibrate'"
        ),
    )
    fit = fit_spec(timings, start, prior_weight=HOST_PRIOR_WEIGHT, fixed=("call",))
    spec = _renormalise(fit.spec)
    report = {
        "graphs": len(benches),
        "threads": thread_counts,
        "fit_mean_abs_rel_error": fit.mape,
        "fit_max_abs_rel_error": fit.max_abs_rel_error,
        "call_overhead_us": call_us[settings.threads],
        "measured_us": {
            f"{b.name}@{n}": float(r[0] * 1e6)
            for n, results in measured.items()
            for b, r in zip(benches, results, strict=True)
        },
    }
    return spec, report


def export_kit(out: str | Path, seed: int = 0) -> list[Path]:
    """Write the calibration kit's graphs into ``out`` (created; must hold no ``.onnx``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--export-kit {out}: not a directory")
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("*.onnx")):
        raise UsageError(f"--export-kit {out}: already holds .onnx files; give an empty directory")
    return _save(calibration_kit(seed), out)


def measure_dir(directory: str | Path, settings: TimingSettings) -> Path:
    """Time every ``.onnx`` in ``directory`` and write ``directory/measured.csv``."""
    from hapi_dse.atomic import write_text
    from hapi_dse.profiling.opcost import load_graph

    directory = Path(directory)
    paths = sorted(directory.glob("*.onnx"))
    if not paths:
        raise UsageError(f"--measure {directory}: no .onnx files in it")
    for p in paths:
        load_graph(p)  # a file that is not a graph: one line, before any timing
    results = time_graphs(paths, settings)
    lines = [",".join(MEASURED_COLUMNS)]
    for p, (sec, p90, runs) in zip(paths, results, strict=True):
        lines.append(f"{p.name},{sec * 1e3:.6f},{settings.threads},{p90 * 1e3:.6f},{runs}")
    dest = directory / MEASURED_CSV
    write_text(dest, "\n".join(lines) + "\n")
    return dest


def read_measured(path: str | Path, default_threads: int, channel_block: int = 1) -> list[Timing]:
    """The timings of a ``measured.csv``: each ``model`` an ONNX file relative to the CSV,
    ``latency_ms`` finite and > 0, ``threads`` (optional) an integer >= 1."""
    path = Path(path)
    rows = read_csv(path)  # one line for an unreadable, non-UTF-8 or malformed file
    if not rows or not {"model", "latency_ms"} <= set(rows[0]):
        raise ArtefactError(f"{path}: expected a CSV with columns model,latency_ms[,threads]")
    out = []
    for i, r in enumerate(rows, start=2):
        where = f"{path}:{i}"
        model = (r.get("model") or "").strip()
        if not model:
            raise ArtefactError(f"{where}: empty model")
        try:
            ms = float(r.get("latency_ms") or "")
        except ValueError:
            raise ArtefactError(
                f"{where}: latency_ms {r.get('latency_ms')!r} is not a number"
            ) from None
        if not math.isfinite(ms) or ms <= 0:
            raise ArtefactError(f"{where}: latency_ms = {ms!r}, expected a finite number > 0")
        t = (r.get("threads") or "").strip()
        if t and (not t.isdigit() or int(t) < 1):
            raise ArtefactError(f"{where}: threads {t!r}, expected an integer >= 1")
        threads = int(t) if t else default_threads
        graph = path.parent / model
        if not graph.is_file():
            raise ArtefactError(f"{where}: model {model!r} not found (relative to {path.parent})")
        out.append(Timing(Path(model).stem, graph_costs(graph, channel_block), threads, ms * 1e-3))
    return out


def fit_measured(
    csv_path: str | Path, start: DeviceSpec, *, threads: int | None = None
) -> tuple[DeviceSpec, FitResult]:
    """Fit ``start`` (a datasheet spec) to the timings of ``csv_path``; the spec returned
    records the fit (``[calibration]``)."""
    csv_path = Path(csv_path)
    timings = read_measured(csv_path, threads or start.threads, start.channel_block)
    noop = [t for t in timings if t.name == NOOP]
    fixed: tuple[str, ...] = ()
    if noop:
        start = replace(start, call_overhead_us=float(np.median([t.seconds for t in noop])) * 1e6)
        fixed = ("call",)
    timings = [t for t in timings if t.name != NOOP]
    if not timings:
        raise ArtefactError(f"{csv_path}: no timings to fit but the no-op graph's")
    fit = fit_spec(timings, start, fixed=fixed)
    spec = replace(
        fit.spec,
        calibration={
            "source": f"hapi calibrate --fit {csv_path.name}",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "measured_csv_sha256": hashlib.sha256(csv_path.read_bytes()).hexdigest(),
            "graphs": len(timings),
            "threads": sorted({t.threads for t in timings}),
            "fit_mape": round(fit.mape, 4),
            "fit_max_abs_rel_error": round(fit.max_abs_rel_error, 4),
            "start_spec": str(start.path) if start.path else start.name,
            "residuals": {k: round(v, 4) for k, v in fit.residuals.items()},
        },
    )
    return spec, fit


def write_calibrated(spec: DeviceSpec, device: str, profiles: str | Path | None) -> Path:
    """Write a fitted spec as ``PROFILES/specs/DEVICE.toml`` with a header saying how."""
    from hapi_dse.profiling.names import check_name
    from hapi_dse.profiling.specs import write_spec

    spec = replace(spec, name=check_name("--device", device))
    cal = spec.calibration
    header = (
        f"Spec of {device} calibrated by '{cal.get('source', 'hapi calibrate')}' on "
        f"{cal.get('graphs', '?')} timed graphs ({cal.get('date', '?')}), starting from "
        f"{cal.get('start_spec', '?')}.\nFit error: mean abs {cal.get('fit_mape', 0) * 100:.1f} %,"
        f" worst {cal.get('fit_max_abs_rel_error', 0) * 100:.1f} % (per graph in "
        "[calibration.residuals]).\nEvery figure below was fitted; the datasheet values it "
        "started from are in the start spec."
    )
    return write_spec(spec, profiles, header)
