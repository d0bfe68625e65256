"""Energy meters: Linux powercap (RAPL), NVML, or a user command that prints joules.

A meter is a cumulative counter in joules; the profiler reads it before and after running a
segment back to back for a fixed window and divides by the number of calls. The figure is
what the whole measured domain (CPU package, GPU board, or whatever the command reads) spent
while the segment ran, idle share included: what a battery pays. Without a meter, energy is
modelled as ``active_power_w * latency`` from the device spec.
"""

from __future__ import annotations

import logging
import math
import shlex
import subprocess
from abc import ABC, abstractmethod
from pathlib import Path

from hapi_dse.errors import SettingError, UsageError

log = logging.getLogger(__name__)

POWERCAP = Path("/sys/class/powercap")


class EnergyMeter(ABC):
    """A cumulative energy counter. ``read_j`` is called before and after each window."""

    name: str = "meter"

    @abstractmethod
    def read_j(self) -> float:
        """The counter now, in joules (monotone except for wrap-around, handled by ``delta``)."""

    def delta_j(self, before: float, after: float) -> float:
        return after - before

    def describe(self) -> str:
        return self.name


class RaplMeter(EnergyMeter):
    """Sum of the top-level package domains under ``/sys/class/powercap`` (``*-rapl:N``)."""

    name = "rapl"

    def __init__(self, root: Path = POWERCAP) -> None:
        self.domains = [
            d
            for d in sorted(root.glob("*rapl:*"))
            if d.name.count(":") == 1 and (d / "energy_uj").is_file()
        ]
        if not self.domains:
            raise FileNotFoundError(root)
        self.ranges = []
        for d in self.domains:
            try:
                self.ranges.append(int((d / "max_energy_range_uj").read_text()) / 1e6)
            except (OSError, ValueError):
                self.ranges.append(0.0)
        self._each = [self._read(d) for d in self.domains]  # raises if unreadable

    @staticmethod
    def _read(d: Path) -> float:
        return int((d / "energy_uj").read_text()) / 1e6

    def read_j(self) -> float:
        return sum(self._read(d) for d in self.domains)

    def delta_j(self, before: float, after: float) -> float:
        d = after - before
        if d < 0:  # one counter wrapped
            d += max(self.ranges, default=0.0)
        return d

    def describe(self) -> str:
        return "rapl:" + ",".join(d.name for d in self.domains)


class NvmlMeter(EnergyMeter):
    """``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load, Volta and later)."""

    name = "nvml"

    def __init__(self, index: int = 0) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.read_j()

    def read_j(self) -> float:
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)) / 1e3


class CommandMeter(EnergyMeter):
    """A user command whose standard output's last number is a cumulative count of joules."""

    name = "command"

    def __init__(self, command: str) -> None:
        self.command = command
        self.argv = check_energy_cmd(command)
        self.read_j()

    def read_j(self) -> float:
        try:
            res = subprocess.run(self.argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SettingError("energy_cmd", f"{self.command!r} failed to run ({e})") from None
        if res.returncode != 0:
            raise SettingError(
                "energy_cmd",
                f"{self.command!r} exited with status {res.returncode}: {res.stderr.strip()[:200]}",
            )
        tokens = res.stdout.split()
        try:
            value = float(tokens[-1])
            if not math.isfinite(value) or value < 0:
                raise ValueError(value)
            return value
        except (IndexError, ValueError):
            raise SettingError(
                "energy_cmd",
                f"{self.command!r} printed {res.stdout.strip()[:80]!r}: expected "
                "a number of joules (finite, >= 0: a cumulative counter) as the last word",
            ) from None

    def describe(self) -> str:
        return f"command:{self.command}"


def check_energy_cmd(command: str) -> list[str]:
    """The words of ``--energy-cmd``; an empty one (``''`` meant "no meter" before, silently)
    or one that does not split as a shell line is refused."""
    try:
        argv = shlex.split(command)
    except ValueError as e:  # an unclosed quote
        raise SettingError(
            "energy_cmd", f"{command!r}: not a command line ({e}); quote it as a shell would"
        ) from None
    if not argv:
        raise SettingError(
            "energy_cmd",
            f"{command!r} is empty: give a command that prints joules, or leave "
            "{energy_cmd} out (RAPL, NVML, else modelled energy)",
            ("energy_cmd",),
        )
    return argv


def check_counter_moved(meter: EnergyMeter, deltas_j: list[float], seconds: float) -> None:
    """Refuse a meter whose counter did not move while every segment ran (``deltas_j``, one
    per segment, over ``seconds`` of back-to-back calls in all): energy 0 for every segment
    is a constant or stuck counter, not a measurement."""
    if deltas_j and not any(d > 0 for d in deltas_j):
        rule = (
            f"did not change while {len(deltas_j)} segments ran for {seconds:.1f} s: "
            "expected a cumulative counter of joules that grows; fix the meter"
        )
        if isinstance(meter, CommandMeter):
            raise SettingError(
                "energy_cmd",
                f"{meter.command!r} {rule}, or leave {{energy_cmd}} out for modelled energy",
                ("energy_cmd",),
            )
        raise UsageError(  # an automatic meter (RAPL, NVML): no setting chose it
            f"the energy counter {meter.describe()} {rule}, or leave --energy-cmd out for "
            "modelled energy"
        )


def detect_meter(
    energy_cmd: str | None = None, *, powercap: Path = POWERCAP, try_nvml: bool = True
) -> EnergyMeter | None:
    """``--energy-cmd`` if given, else RAPL if readable, else NVML if importable, else None."""
    if energy_cmd is not None:  # an empty one is refused, not taken for "none"
        return CommandMeter(energy_cmd)
    try:
        return RaplMeter(powercap)
    except (OSError, ValueError):
        pass
    if try_nvml:
        try:
            return NvmlMeter()
        except Exception as e:  # ImportError, NVMLError, no GPU: all mean "no meter"
            log.debug("no NVML energy counter: %s", e)
    return None
