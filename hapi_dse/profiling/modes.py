"""What ``hapi profile`` is asked (:class:`ProfileConfig`, its :class:`ProfileMode`) and what
it returns: one result type per mode, each with its console summary.

:func:`~hapi_dse.profiling.runner.run_profile` returns a :class:`ProfiledTable` in the
modes ``measure`` and ``modelled``, :class:`ExportedSegments` in ``export-only`` and
:class:`CalibratedSpec` in ``calibrate``: every field is set for its mode, so a caller
dispatches on the type (or just prints ``summary()``) and never checks for ``None``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hapi_dse.errors import SettingError, unknown_name
from hapi_dse.onnx_tools import DEFAULT_EXPORTER, DEFAULT_OPSET, EXPORTERS
from hapi_dse.profiling.timing import TimingSettings

if TYPE_CHECKING:
    from hapi_dse.profiling.base import ProfileResult
    from hapi_dse.profiling.manifest import Manifest
    from hapi_dse.profiling.specs import DeviceSpec

__all__ = [
    "CalibratedSpec",
    "ExportedSegments",
    "ProfileConfig",
    "ProfileMode",
    "ProfileOutcome",
    "ProfiledTable",
]


class ProfileMode(str, Enum):
    """What a ``hapi profile`` run does (see the module doc)."""

    MEASURE = "measure"
    MODELLED = "modelled"
    EXPORT_ONLY = "export-only"
    CALIBRATE = "calibrate"

    @classmethod
    def parse(cls, name: str | ProfileMode) -> ProfileMode:
        try:
            return cls(name)
        except ValueError:
            raise unknown_name("profile mode", str(name), [m.value for m in cls]) from None

    @classmethod
    def from_flags(
        cls, *, modelled: bool = False, export_only: bool = False, calibrate: bool = False
    ) -> ProfileMode:
        """The mode ``hapi profile``'s flags select: ``--calibrate`` over ``--export-only``
        over ``--modelled``; none of them is ``measure``."""
        if calibrate:
            return cls.CALIBRATE
        if export_only:
            return cls.EXPORT_ONLY
        return cls.MODELLED if modelled else cls.MEASURE


@dataclass
class ProfileConfig:
    """Every setting of ``hapi profile`` (recorded in the sidecar: :meth:`settings`)."""

    device: str = "host"
    mode: ProfileMode = ProfileMode.MEASURE
    model: str | None = None
    profiles: str | None = None
    onnx_dir: str | None = None
    export_dir: str | None = None
    spec: str | None = None
    provider: str = TimingSettings.provider
    threads: int = TimingSettings.threads
    runs: int = TimingSettings.runs
    warmup: int = TimingSettings.warmup
    rounds: int = TimingSettings.rounds
    batch: int = 1
    energy_cmd: str | None = None
    energy_window_s: float = 0.2
    exporter: str = DEFAULT_EXPORTER
    opset: int = DEFAULT_OPSET
    seed: int = 0
    force: bool = False

    def __post_init__(self) -> None:
        self.mode = ProfileMode.parse(self.mode)

    def settings(self) -> dict[str, Any]:
        """The settings a table's sidecar records: every field, the mode written as the
        flags that select it (``export_only``, ``modelled``, ``calibrate``, where they stood
        before there was a mode), so that sidecars old and new compare key by key."""
        rest, mode = asdict(self), self.mode
        del rest["mode"]
        first = ("device", "model", "profiles", "onnx_dir", "export_dir")
        return {
            **{k: rest.pop(k) for k in first},
            "export_only": mode is ProfileMode.EXPORT_ONLY,
            "modelled": mode is ProfileMode.MODELLED,
            "spec": rest.pop("spec"),
            "calibrate": mode is ProfileMode.CALIBRATE,
            **rest,
        }

    def validate(self) -> None:
        """Every check of the settings, before any work (the one place they are checked)."""
        if self.batch < 1:
            raise SettingError("batch", f"{self.batch}: must be >= 1")
        if self.threads < 1:
            raise SettingError("threads", f"{self.threads}: must be >= 1")
        if self.exporter not in EXPORTERS:
            raise SettingError("exporter", f"{self.exporter!r}: expected {' or '.join(EXPORTERS)}")
        if self.onnx_dir and self.model:
            raise SettingError(
                "onnx_dir",
                "and {model} exclude each other: the segments in {onnx_dir} were exported "
                "from a model already",
                ("model", "onnx_dir"),
            )
        if self.mode is ProfileMode.EXPORT_ONLY and not self.export_dir:
            # the mode export-only is the command line's --export-only
            raise SettingError(
                "export_only",
                "needs {export_dir} DIR (where to put the segments)",
                ("export_dir",),
            )
        from hapi_dse.profiling.energy import check_energy_cmd
        from hapi_dse.profiling.names import valid_device_name

        if not valid_device_name(self.device):
            raise SettingError(
                "device",
                f"{self.device!r}: use letters, digits, '-', '_' or '.' (it names a directory)",
            )
        if self.energy_cmd is not None:
            check_energy_cmd(self.energy_cmd)
        if self.mode is ProfileMode.MODELLED and self.energy_cmd:
            raise SettingError(
                "energy_cmd",
                "measures energy; a {modelled} table has none to meter",
                ("modelled",),
            )


@dataclass(frozen=True)
class ProfiledTable:
    """A device's profile table (modes ``measure`` and ``modelled``).

    ``device``: the device profiled. ``path``: the table's CSV file (its sidecar beside it,
    ``.json``); ``None`` when it was built in a temporary place and not kept
    (``hapi_dse.api.profile`` without ``out``). ``manifest``: the segments profiled
    (:class:`~hapi_dse.profiling.manifest.Manifest`: model id, batch, exporter, export
    check). ``result``: the table itself (``.rows``, one dict per segment: ``latency_ms``,
    ``energy_mj``, ``flops``, ``source``...; ``.sidecar``: what the profiler adds to the
    sidecar, e.g. ``call_overhead_ms``). :meth:`summary`: two console lines."""

    device: str
    path: Path | None
    manifest: Manifest
    result: ProfileResult

    def summary(self) -> str:
        """Two console lines: what was profiled where, and the block and overhead totals."""
        rows, side = self.result.rows, self.result.sidecar
        blocks = sum(r["latency_ms"] for r in rows if r["segment"] == "block")
        first = (
            f"{len(rows)} segments of {self.manifest.model_id} on {self.device} "
            f"({rows[0]['source']}, energy {rows[0]['energy_source']}) -> "
            f"{self.path or 'not written'}"
        )
        line = f"blocks {blocks:.3f} ms, call overhead {side['call_overhead_ms']:.4f} ms"
        if side.get("monolithic_backbone_ms"):
            line += (
                f", monolithic backbone {side['monolithic_backbone_ms']:.3f} ms "
                f"(sum of blocks / monolithic = {side['segments_sum_over_monolithic']:.2f})"
            )
        return f"{first}\n{line}"


@dataclass(frozen=True)
class ExportedSegments:
    """The segments exported to ``manifest.root`` for a board (mode ``export-only``)."""

    manifest: Manifest

    def summary(self) -> str:
        man = self.manifest
        return (
            f"{len(man.segments)} graphs of model {man.model_id} exported to {man.root}; "
            f"profile them on the device with 'hapi profile --onnx-dir DIR --device NAME'"
        )


@dataclass(frozen=True)
class CalibratedSpec:
    """A spec fitted for this machine and written to ``spec_path`` (mode ``calibrate``).

    ``report`` holds the fit's figures (graphs, fit error, call overhead...); ``comparison``
    the spec's model of this machine's measured table (segments, Spearman rho, MAPE), or
    ``None`` when there is no measured table to compare with.
    """

    device: str
    spec_path: Path
    spec: DeviceSpec
    report: dict[str, Any]
    comparison: dict[str, Any] | None = None

    def summary(self) -> str:
        rep = self.report
        lines = [
            f"spec for {self.device} written to {self.spec_path} ({rep['graphs']} graphs, "
            f"fit error {rep['fit_mean_abs_rel_error']:.1%}, call overhead "
            f"{rep['call_overhead_us']:.1f} us)"
        ]
        cmp = self.comparison
        if cmp:
            lines.append(
                f"model vs measured table over {cmp['segments']} segments: "
                f"spearman {cmp['spearman']:.3f}, MAPE {cmp['mape']:.1%}"
            )
        return "\n".join(lines)


#: What :func:`~hapi_dse.profiling.runner.run_profile` returns, by mode.
ProfileOutcome = ProfiledTable | ExportedSegments | CalibratedSpec
