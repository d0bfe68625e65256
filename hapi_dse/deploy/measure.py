"""How hapi measures an export's latency: ``hapi eval``, ``hapi search --verify`` and
``scripts/bench_export.py`` all call :func:`measure_exports`.

Protocol: the profile's (:mod:`hapi_dse.profiling.timing`), applied to whole inferences on
real samples. Every export gets ``warmup`` untimed calls. Then ``passes`` passes over the
samples, each in a fresh random order (so a sample follows a random predecessor, as in
service), cut into rounds of ``round_size`` samples; within a round every export runs the
round's samples, the exports in a fresh random order, one ``session.run`` per sample timed
with ``time.perf_counter_ns`` (garbage collector paused). A slow drift of the machine
therefore hits all exports alike.

Estimator: a network's latency depends on the exit path a sample takes, not on the sample
(the decisions are checked against the cost model's, sample by sample). So, as the profile
does per segment, the latency of each exit path is **the smallest over the rounds of the
median of the round's calls on that path** (rounds with fewer than
:data:`MIN_CALLS` such calls do not count; a path that never has enough takes the median
of all its calls): the median of the quietest round, which other processes taking the
cores during part of the measurement do not move. Each sample's latency is its path's; the
mean, p50, p90, p99 and max over the samples follow, as the cost model defines them
(:func:`hapi_dse.cost.metrics.statistics`). The plain mean of every timed call is kept too
(``raw_mean``).

Busy machine: the quietest-round estimator survives other processes taking the cores for
part of the measurement, not for all of it (then every figure reads several times high).
:func:`load_report` flags the measurement as busy when the load average before or after
exceeds the number of cores, or when this process had the cores it asked for (``threads``)
less than :data:`BUSY_CPU_SHARE` of the timed wall-clock time (its CPU time over wall time:
what other processes, or a hypervisor's steal, took from it, whatever the load average
says). The figures are never corrected: the flag, its reasons and the readings go into the
report, and one warning line goes to stderr.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hapi_dse.cost.metrics import statistics
from hapi_dse.progress import Progress

log = logging.getLogger(__name__)

DEFAULT_PASSES = 2
DEFAULT_ROUND_SIZE = 500
#: a round counts for a path when it has at least this many calls on it
MIN_CALLS = 3
#: below this share of its cores' time during the timed loop, the measurement was starved
BUSY_CPU_SHARE = 0.8


@dataclass
class Measurement:
    """One export measured on ``n`` samples: outputs, and latency statistics in ms."""

    prediction: np.ndarray  # (n,) argmax of the logits
    exit_index: np.ndarray  # (n,)
    latency_ms: dict[str, float]  # metrics.STATISTICS over samples of their path's latency
    path_ms: list[float | None]  # latency per exit path (None: no sample took it)
    raw_mean_ms: float  # plain mean of every timed call
    load: dict[str, Any] = field(default_factory=dict)

    @property
    def busy(self) -> bool:
        return bool(self.load.get("busy"))


def machine_load() -> tuple[float, int]:
    """The 1-minute load average and the number of cores."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        load = 0.0
    return float(load), os.cpu_count() or 1


def clocks() -> tuple[float, float]:
    """This process's CPU time and the wall-clock time, in seconds."""
    return time.process_time(), time.perf_counter()


def load_report(
    before: tuple[float, int],
    after: tuple[float, int],
    cpu_s: float | None = None,
    wall_s: float | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """The machine's readings over a measurement and whether it was busy (module docstring):
    load averages ``before``/``after`` as :func:`machine_load` gives them, and the CPU and
    wall-clock seconds of the timed loop run with ``threads`` intra-op threads."""
    cores = before[1]
    reasons = []
    if max(before[0], after[0]) > cores:
        reasons.append("load")
    share = None
    if cpu_s is not None and wall_s:
        share = round(cpu_s / (wall_s * max(min(threads, cores), 1)), 3)
        if share < BUSY_CPU_SHARE:
            reasons.append("cpu_share")
    return {
        "load_before": before[0],
        "load_after": after[0],
        "cores": cores,
        "threads": threads,
        "cpu_share": share,
        "cpu_share_min": BUSY_CPU_SHARE,
        "busy": bool(reasons),
        "busy_because": reasons,
    }


def busy_warning(load: dict[str, Any]) -> str:
    share = load.get("cpu_share")
    got = "" if share is None else f", this process got {100 * share:.0f} % of its cores' time"
    return (
        f"the machine was busy while measuring (load average {load['load_before']:.1f} -> "
        f"{load['load_after']:.1f} on {load['cores']} cores{got}): the latencies may read "
        "higher than a quiet machine's; measure again on a quiet machine"
    )


def path_latencies(
    lat: np.ndarray, paths: np.ndarray, rounds: list[np.ndarray], num_paths: int
) -> list[float | None]:
    """The estimator of the module docstring: ``lat`` ``(passes, n)`` per-call latencies,
    ``paths`` ``(n,)`` the path of each sample, ``rounds`` ``(pass, sample indices)``
    pairs flattened as index arrays into ``lat.ravel()``."""
    flat = lat.ravel()
    flat_paths = np.tile(paths, lat.shape[0])
    out: list[float | None] = []
    for i in range(num_paths):
        best = None
        for idx in rounds:
            vals = flat[idx][flat_paths[idx] == i]
            if len(vals) >= MIN_CALLS:
                med = float(np.median(vals))
                best = med if best is None else min(best, med)
        if best is None:
            vals = flat[flat_paths == i]
            best = float(np.median(vals)) if len(vals) else None
        out.append(best)
    return out


def measure_exports(
    runners: Sequence[Callable[[np.ndarray], tuple[np.ndarray, int]]],
    x: np.ndarray,
    *,
    num_paths: Sequence[int],
    passes: int = DEFAULT_PASSES,
    round_size: int = DEFAULT_ROUND_SIZE,
    warmup: int = 50,
    seed: int = 0,
    threads: int = 1,
    desc: str = "measure",
    progress: bool = True,
) -> list[Measurement]:
    """Measure every runner (``x (1, ...) -> (logits, exit_index)``, with ``num_paths``
    exit paths and ``threads`` intra-op threads) on every sample of ``x`` with the protocol
    of the module docstring; ``progress``: a progress bar on a terminal."""
    n, e = len(x), len(runners)
    if n == 0:
        raise ValueError("no samples to measure")
    passes = max(int(passes), 1)
    round_size = max(int(round_size), 1)
    rng = np.random.default_rng(seed)
    before = machine_load()
    for run in runners:
        for i in range(min(warmup, n)):
            run(x[i : i + 1])
    pred = np.full((e, n), -1, np.int64)
    exit_idx = np.full((e, n), -1, np.int64)
    lat = np.empty((e, passes, n), np.float64)
    rounds: list[np.ndarray] = []  # indices into lat[j].ravel()
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    cpu0, wall0 = clocks()
    try:
        with Progress(passes * e * n, desc, show=progress) as bar:
            for p in range(passes):
                order = rng.permutation(n)
                for lo in range(0, n, round_size):
                    chunk = order[lo : lo + round_size]
                    rounds.append(p * n + chunk)
                    for j in rng.permutation(e):
                        run = runners[j]
                        row = lat[j, p]
                        for i in chunk:
                            xi = x[i : i + 1]
                            t0 = clock()
                            z, k = run(xi)
                            row[i] = (clock() - t0) / 1e6
                            pred[j, i] = int(np.argmax(z))
                            exit_idx[j, i] = k
                        bar.update(len(chunk))
    finally:
        if gc_was_enabled:
            gc.enable()
    cpu1, wall1 = clocks()
    load = load_report(before, machine_load(), cpu1 - cpu0, wall1 - wall0, threads)
    if load["busy"]:
        log.warning(busy_warning(load))
    out = []
    for j in range(e):
        paths = path_latencies(lat[j], exit_idx[j], rounds, num_paths[j])
        per_sample = np.array([paths[k] for k in exit_idx[j]], np.float64)
        out.append(
            Measurement(
                prediction=pred[j],
                exit_index=exit_idx[j],
                latency_ms=statistics(per_sample),
                path_ms=paths,
                raw_mean_ms=float(lat[j].mean()),
                load=load,
            )
        )
    return out
