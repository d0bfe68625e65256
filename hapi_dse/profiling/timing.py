"""Latency measurement with onnxruntime (needs onnxruntime and numpy only).

Protocol: one ``InferenceSession`` per graph, pinned ``intra_op_num_threads`` (and one
inter-op thread, sequential execution), ``ORT_ENABLE_ALL``. Every session gets ``warmup``
untimed calls; then ``rounds`` rounds (at most ``runs / 5``) each give every session
``runs / rounds`` timed calls in a fresh seeded-random order, so slow drifts of the machine
(another process, frequency changes) are shared by all segments instead of landing on a
few. Each call is timed on its own with ``time.perf_counter_ns``. The reported median is,
by default, the smallest of the per-round medians (``estimator="min_round_median"``): the
median of the quietest round, which another process competing for the cores during part of
the profile does not move (the plain median of all calls, ``estimator="median"``, drifts
with it). The 90th percentile is over all calls. A latency includes one ``session.run``
call overhead; the no-op graph measures that overhead alone. The garbage collector is
paused while timing.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.onnx_tools.session import open_session

#: A round gives each graph at least this many consecutive timed calls, so a round's median
#: is a median of warm calls and not a single sample.
MIN_CALLS_PER_ROUND = 5


@dataclass(frozen=True)
class TimingResult:
    median_ms: float
    p90_ms: float
    runs: int
    min_ms: float


@dataclass(frozen=True)
class TimingSettings:
    provider: str = "CPUExecutionProvider"
    threads: int = 1
    runs: int = 200
    warmup: int = 20
    rounds: int = 40
    seed: int = 0
    optimization: str = "all"  # basic | extended | all
    estimator: str = "min_round_median"  # or "median" (of all calls)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def make_session(path: str | Path, settings: TimingSettings) -> Any:
    """The session a graph is timed in (:func:`hapi_dse.onnx_tools.open_session`)."""
    return open_session(
        path,
        threads=settings.threads,
        optimization=settings.optimization,
        provider=settings.provider,
    )


def random_feed(session: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feed = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def time_sessions(
    sessions: Sequence[Any],
    settings: TimingSettings,
    on_progress: Callable[[int, int], None] | None = None,
    between_rounds: Callable[[], None] | None = None,
) -> list[TimingResult]:
    """Time several sessions with the interleaved protocol (see module docstring).

    ``between_rounds`` runs after every round, with the garbage collector still paused:
    other timings that must see the same quiet and busy spells of the machine as these
    sessions (the deployment probes) take their rounds there."""
    if settings.estimator not in ("min_round_median", "median"):
        raise ValueError(f"unknown estimator {settings.estimator!r}")
    rng = np.random.default_rng(settings.seed)
    feeds = [random_feed(s, rng) for s in sessions]
    n = len(sessions)
    rounds = max(1, min(settings.rounds, settings.runs // MIN_CALLS_PER_ROUND))
    per_round = [
        settings.runs // rounds + (1 if r < settings.runs % rounds else 0) for r in range(rounds)
    ]
    samples = [np.empty(settings.runs, dtype=np.int64) for _ in range(n)]
    round_medians: list[list[float]] = [[] for _ in range(n)]
    filled = [0] * n
    clock = time.perf_counter_ns
    for sess, feed in zip(sessions, feeds, strict=True):
        for _ in range(settings.warmup):
            sess.run(None, feed)
    total = sum(per_round) * n
    done = 0
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for k in per_round:
            for i in rng.permutation(n):
                run = sessions[i].run
                feed = feeds[i]
                buf = samples[i]
                j0 = j = filled[i]
                run(None, feed)  # re-warm after the other sessions ran
                for _ in range(k):
                    t0 = clock()
                    run(None, feed)
                    buf[j] = clock() - t0
                    j += 1
                filled[i] = j
                round_medians[i].append(float(np.median(buf[j0:j])) / 1e6)
                done += k
                if on_progress:
                    on_progress(done, total)
            if between_rounds is not None:
                between_rounds()
    finally:
        if gc_was_enabled:
            gc.enable()
    out = []
    for buf, rm in zip(samples, round_medians, strict=True):
        ms = buf.astype(np.float64) / 1e6
        med = min(rm) if settings.estimator == "min_round_median" else float(np.median(ms))
        p90 = max(float(np.percentile(ms, 90)), med)
        out.append(
            TimingResult(median_ms=med, p90_ms=p90, runs=int(ms.size), min_ms=float(ms.min()))
        )
    return out


def run_energy_window(
    session: Any, feed: dict[str, np.ndarray], min_s: float, min_runs: int
) -> tuple[int, float]:
    """Run ``session`` back to back for at least ``min_s`` seconds; return (calls, seconds)."""
    calls = 0
    t0 = time.perf_counter()
    while True:
        session.run(None, feed)
        calls += 1
        elapsed = time.perf_counter() - t0
        if calls >= min_runs and elapsed >= min_s:
            return calls, elapsed
