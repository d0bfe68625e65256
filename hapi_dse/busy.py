"""Was the machine busy while hapi timed something? ``hapi profile`` and every export
measurement (``hapi eval``, ``search --verify``, the benchmarks) ask this one module.

Busy machine: the quietest-round estimator survives other processes taking the cores for
part of the measurement, not for all of it (then every figure reads several times high).
A measurement is flagged as busy when the load average before or after
exceeds the number of cores, or when this process had the cores it asked for (``threads``)
less than :data:`BUSY_CPU_SHARE` of the timed wall-clock time (its CPU time over wall time:
what other processes, or a hypervisor's steal, took from it, whatever the load average
says). The figures are never corrected: the flag, its reasons and the readings go into the
report, and one warning line goes to stderr.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

#: below this share of its cores' time during the timed loop, the measurement was starved
BUSY_CPU_SHARE = 0.8


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


@contextlib.contextmanager
def watch(threads: int = 1) -> Iterator[dict[str, Any]]:
    """The readings of :func:`load_report` over the ``with`` block (a timed loop run with
    ``threads`` intra-op threads): the dict it yields is filled when the block ends."""
    before, (cpu0, wall0) = machine_load(), clocks()
    report: dict[str, Any] = {}
    yield report
    cpu1, wall1 = clocks()
    report.update(load_report(before, machine_load(), cpu1 - cpu0, wall1 - wall0, threads))
