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

Busy machine: see :mod:`hapi_dse.busy`; the figures are never corrected, the readings go
into the report and one warning line to stderr.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hapi_dse import busy
from hapi_dse.cost.metrics import statistics
from hapi_dse.progress import Progress

log = logging.getLogger(__name__)

DEFAULT_ROUND_SIZE = 500
#: a round counts for a path when it has at least this many calls on it
MIN_CALLS = 3


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
    passes: int,
    warmup: int,
    round_size: int = DEFAULT_ROUND_SIZE,
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
    try:
        with busy.watch(threads) as load, Progress(passes * e * n, desc, show=progress) as bar:
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
    if load["busy"]:
        log.warning(busy.busy_warning(load))
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
