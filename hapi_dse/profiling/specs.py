"""Device spec files ``profiles/specs/DEVICE.toml``: a model of a device, for modelled tables
and ``hapi estimate``.

A spec describes the cores one inference uses. Each operator of a graph costs its class's
overhead plus the larger of its compute time and its memory time
(:func:`hapi_dse.profiling.modelled.estimate_s`); its work (FLOPs, bytes) comes from its
shapes (:mod:`hapi_dse.profiling.opcost`):

- ``flops_per_s``: one core's peak FP32 FLOP/s; ``[efficiency]`` the fraction of it each
  operator class reaches (a class not listed: 1.0);
- ``mem_bandwidth_bytes_per_s``: what one core streams; ``mem_bandwidth_total_bytes_per_s``
  what all cores together do (the bandwidth is shared; default: one core's);
- ``threads``: the thread count users deploy with (all big cores). With more than one, an
  operator's compute splits over the cores with ``[parallel_efficiency]`` per class (speed-up
  ``1 + (threads - 1) * e``) and pays ``thread_overhead_us`` to fork and join; a runtime
  runs an operator on one core when that is quicker, and so does the model; every operator
  pays ``thread_op_overhead_us`` per thread beyond the first (the pool's dispatch);
- ``channel_block``: the channels a runtime's blocked convolution kernels compute at once
  (16 for onnxruntime's NCHWc kernels with AVX-512, 8 with AVX2; 1: none, as on Arm): the
  graph is costed with its channels padded and its layout reorders
  (:func:`hapi_dse.profiling.opcost.graph_costs`);
- ``[memory_efficiency]``: per class, the fraction of the bandwidth its kernels stream at
  (above 1 for work that stays in cache; default 1);
- ``[output_ns]``: per class, nanoseconds per output element a kernel spends beyond its
  FLOPs and bytes (its loop and store; for a GEMM-like convolution the cost of a short
  reduction: a 1x1 layer with few input channels runs far below its FLOP rate);
- ``op_overhead_us`` per executed operator (``[class_overhead_us]`` per class),
  ``call_overhead_us`` per ``session.run``, ``active_power_w`` for energy;
- ``[calibration]``: written by ``hapi calibrate --fit``: what the spec was fitted on and its
  error there.

```toml
name = "raspberry-pi-4"
description = "..."
threads = 4
flops_per_s = 12.0e9             # peak of one core
mem_bandwidth_bytes_per_s = 4.3e9
mem_bandwidth_total_bytes_per_s = 6.0e9
op_overhead_us = 4.0
call_overhead_us = 30.0
thread_overhead_us = 6.0
active_power_w = 3.4
[efficiency]
conv = 0.5
conv1x1 = 0.3
[parallel_efficiency]
conv = 0.9
```

Specs written before op classes existed (``[op_flops_per_s]`` and ``[op_overhead_us_by_type]``
keyed by ONNX operator type) are read too: each key becomes the classes it covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hapi_dse.errors import ArtefactError, unknown_name
from hapi_dse.paths import SPECS_SUBDIR, default_profiles_out, profile_search_path
from hapi_dse.profiling.opcost import OP_CLASSES, op_class
from hapi_dse.readers import read_toml

#: Power assumed for modelled energy on a device with neither a meter nor a spec (a laptop
#: or server core under load; 15 W is the base power of a common thin-laptop CPU class).
#: Used by the measured profiler and by ``--calibrate`` when no previous spec gives one.
DEFAULT_ACTIVE_POWER_W = 15.0

REQUIRED = (
    "flops_per_s",
    "mem_bandwidth_bytes_per_s",
    "op_overhead_us",
    "call_overhead_us",
    "active_power_w",
)
OPTIONAL_NUMBERS = (
    "mem_bandwidth_total_bytes_per_s",
    "thread_overhead_us",
    "thread_op_overhead_us",
)
CLASS_TABLES = (
    "efficiency",
    "memory_efficiency",
    "parallel_efficiency",
    "class_overhead_us",
    "output_ns",
)
#: How well each class's compute splits over cores when a spec does not say: convolutions
#: split by output channels or rows almost perfectly, thin and memory-bound work does not.
DEFAULT_PARALLEL_EFFICIENCY: dict[str, float] = {
    "conv": 0.9,
    "conv1x1": 0.8,
    "depthwise": 0.7,
    "gemm": 0.6,
    "pool": 0.7,
    "global_pool": 0.5,
    "elementwise": 0.5,
    "data": 0.3,
    "shape": 0.0,
    "control": 0.0,
    "other": 0.5,
}
# legacy per-op-type keys -> the classes they covered
_LEGACY_CLASSES = {
    "Conv": ("conv", "conv1x1"),
    "DepthwiseConv": ("depthwise",),
    "MatMul": ("gemm",),
}


@dataclass
class DeviceSpec:
    """The figures the cost model needs; see the module docstring for the file format."""

    name: str
    flops_per_s: float
    mem_bandwidth_bytes_per_s: float
    op_overhead_us: float
    call_overhead_us: float
    active_power_w: float
    description: str = ""
    threads: int = 1
    efficiency: dict[str, float] = field(default_factory=dict)
    parallel_efficiency: dict[str, float] = field(default_factory=dict)
    class_overhead_us: dict[str, float] = field(default_factory=dict)
    output_ns: dict[str, float] = field(default_factory=dict)
    memory_efficiency: dict[str, float] = field(default_factory=dict)
    mem_bandwidth_total_bytes_per_s: float | None = None
    thread_overhead_us: float | None = None
    thread_op_overhead_us: float | None = None
    channel_block: int = 1
    calibration: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def rate(self, cls: str) -> float:
        """Effective FLOP/s of one core on an operator of class ``cls``."""
        return self.flops_per_s * self.efficiency.get(cls, 1.0)

    def overhead_s(self, cls: str, threads: int = 1) -> float:
        """Seconds an operator of class ``cls`` costs beyond its work, at ``threads``."""
        extra = (threads - 1) * (self.thread_op_overhead_us or 0.0)
        return (self.class_overhead_us.get(cls, self.op_overhead_us) + extra) * 1e-6

    def output_s(self, cls: str) -> float:
        """Seconds per output element of class ``cls`` beyond its FLOPs and bytes."""
        return self.output_ns.get(cls, 0.0) * 1e-9

    def parallel(self, cls: str) -> float:
        return self.parallel_efficiency.get(cls, DEFAULT_PARALLEL_EFFICIENCY.get(cls, 0.5))

    @property
    def total_bandwidth(self) -> float:
        return self.mem_bandwidth_total_bytes_per_s or self.mem_bandwidth_bytes_per_s

    def bandwidth(self, threads: int, cls: str = "") -> float:
        """Bytes/s that ``threads`` cores stream together (shared, capped by the total) in
        an operator of class ``cls`` (its ``memory_efficiency``)."""
        shared = min(self.mem_bandwidth_bytes_per_s * threads, self.total_bandwidth)
        return shared * self.memory_efficiency.get(cls, 1.0)

    @property
    def fork_join_s(self) -> float:
        t = self.thread_overhead_us
        return (self.op_overhead_us if t is None else t) * 1e-6

    @property
    def calibrated(self) -> bool:
        return bool(self.calibration)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "threads": self.threads,
            "flops_per_s": self.flops_per_s,
            "mem_bandwidth_bytes_per_s": self.mem_bandwidth_bytes_per_s,
            "mem_bandwidth_total_bytes_per_s": self.mem_bandwidth_total_bytes_per_s,
            "op_overhead_us": self.op_overhead_us,
            "call_overhead_us": self.call_overhead_us,
            "thread_overhead_us": self.thread_overhead_us,
            "thread_op_overhead_us": self.thread_op_overhead_us,
            "channel_block": self.channel_block,
            "active_power_w": self.active_power_w,
            "efficiency": dict(self.efficiency),
            "parallel_efficiency": dict(self.parallel_efficiency),
            "class_overhead_us": dict(self.class_overhead_us),
            "output_ns": dict(self.output_ns),
            "memory_efficiency": dict(self.memory_efficiency),
            "calibration": dict(self.calibration),
            "path": str(self.path) if self.path else None,
        }

    def to_toml(self, header: str = "") -> str:
        lines = [f"# {ln}" if ln else "#" for ln in header.splitlines()]
        lines += [
            f"name = {_q(self.name)}",
            f"description = {_q(self.description)}",
            f"threads = {self.threads}",
            f"flops_per_s = {self.flops_per_s:.6g}",
            f"mem_bandwidth_bytes_per_s = {self.mem_bandwidth_bytes_per_s:.6g}",
            f"op_overhead_us = {self.op_overhead_us:.6g}",
            f"call_overhead_us = {self.call_overhead_us:.6g}",
            f"active_power_w = {self.active_power_w:.6g}",
        ]
        if self.channel_block > 1:
            lines.append(f"channel_block = {self.channel_block}")
        for key in OPTIONAL_NUMBERS:
            v = getattr(self, key)
            if v is not None:
                lines.append(f"{key} = {v:.6g}")
        for key in CLASS_TABLES:
            table = getattr(self, key)
            if table:
                lines += ["", f"[{key}]", *(f"{k} = {v:.6g}" for k, v in sorted(table.items()))]
        if self.calibration:
            lines += ["", "[calibration]", *_toml_items(self.calibration)]
        return "\n".join(lines) + "\n"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else '"nan"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return _q(str(v))


def _toml_items(d: dict[str, Any]) -> list[str]:
    """Flat keys first, then sub-tables as inline tables (keys quoted)."""
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            inner = ", ".join(f"{_q(str(a))} = {_toml_value(b)}" for a, b in v.items())
            out.append(f"{_q(k)} = {{ {inner} }}")
        else:
            out.append(f"{_q(k)} = {_toml_value(v)}")
    return out


def _number(path: Path, key: str, v: Any, *, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ArtefactError(f"{path}: {key} = {v!r}, expected a finite number >= 0")
    if positive and v <= 0:
        raise ArtefactError(f"{path}: {key} must be > 0")
    return float(v)


def _class_table(path: Path, key: str, t: Any) -> dict[str, float]:
    if not isinstance(t, dict):
        raise ArtefactError(f"{path}: [{key}] must map operator classes to numbers")
    out = {}
    for k, v in t.items():
        if k not in OP_CLASSES:
            raise ArtefactError(
                f"{path}: [{key}] {k!r} is not an operator class ({', '.join(OP_CLASSES)})"
            )
        out[k] = _number(
            path, f"[{key}] {k}", v, positive=key in ("efficiency", "memory_efficiency")
        )
        if key == "parallel_efficiency" and out[k] > 1:
            raise ArtefactError(f"{path}: [{key}] {k} = {v!r}, expected 0..1")
    return out


def _legacy(path: Path, data: dict[str, Any], flops: float) -> tuple[dict, dict]:
    """``[op_flops_per_s]`` / ``[op_overhead_us_by_type]`` (per ONNX op type) as classes."""
    eff: dict[str, float] = {}
    ov: dict[str, float] = {}
    for key, dest in (("op_flops_per_s", eff), ("op_overhead_us_by_type", ov)):
        t = data.get(key, {})
        if not isinstance(t, dict):
            raise ArtefactError(f"{path}: [{key}] must map ONNX op types to positive numbers")
        for op, v in t.items():
            v = _number(path, f"[{key}] {op}", v, positive=key == "op_flops_per_s")
            for cls in _LEGACY_CLASSES.get(str(op), (op_class(str(op)),)):
                dest[cls] = v / flops if key == "op_flops_per_s" else v
    return eff, ov


def parse_spec(path: str | Path) -> DeviceSpec:
    """Read and validate one spec file."""
    path = Path(path)
    data = read_toml(path)  # one line for any parse failure or limit
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ArtefactError(f"{path}: missing key(s) {', '.join(missing)}")
    nums = {k: _number(path, k, data[k]) for k in REQUIRED}
    for k in ("flops_per_s", "mem_bandwidth_bytes_per_s"):
        if nums[k] <= 0:
            raise ArtefactError(f"{path}: {k} must be > 0")
    optional = {
        k: _number(path, k, data[k], positive=k.startswith("mem")) if k in data else None
        for k in OPTIONAL_NUMBERS
    }
    tables = {k: _class_table(path, k, data.get(k, {})) for k in CLASS_TABLES}
    eff, ov = _legacy(path, data, nums["flops_per_s"])
    tables["efficiency"] = {**eff, **tables["efficiency"]}
    tables["class_overhead_us"] = {**ov, **tables["class_overhead_us"]}
    threads = data.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024:
        raise ArtefactError(f"{path}: threads = {threads!r}, expected an integer 1..1024")
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise ArtefactError(f"{path}: {key} = {data[key]!r}, expected a string")
    block = data.get("channel_block", 1)
    if isinstance(block, bool) or not isinstance(block, int) or not 1 <= block <= 256:
        raise ArtefactError(f"{path}: channel_block = {block!r}, expected an integer 1..256")
    calibration = data.get("calibration", {})
    if not isinstance(calibration, dict):
        raise ArtefactError(f"{path}: [calibration] must be a table")
    for key in ("fit_mape", "fit_max_abs_rel_error"):
        if key in calibration:
            _number(path, f"[calibration] {key}", calibration[key])
    known = {
        *REQUIRED,
        *OPTIONAL_NUMBERS,
        *CLASS_TABLES,
        "name",
        "description",
        "threads",
        "channel_block",
        "calibration",
        "op_flops_per_s",
        "op_overhead_us_by_type",
    }
    return DeviceSpec(
        name=str(data.get("name", path.stem)),
        description=str(data.get("description", "")),
        threads=threads,
        channel_block=block,
        efficiency=tables["efficiency"],
        parallel_efficiency=tables["parallel_efficiency"],
        class_overhead_us=tables["class_overhead_us"],
        output_ns=tables["output_ns"],
        memory_efficiency=tables["memory_efficiency"],
        calibration=calibration,
        path=path,
        extra={k: v for k, v in data.items() if k not in known},
        mem_bandwidth_total_bytes_per_s=optional["mem_bandwidth_total_bytes_per_s"],
        thread_overhead_us=optional["thread_overhead_us"],
        thread_op_overhead_us=optional["thread_op_overhead_us"],
        **nums,
    )


def spec_paths(profiles: str | Path | None = None) -> dict[str, Path]:
    """Every spec on the search path, by device name (earlier directories win)."""
    out: dict[str, Path] = {}
    for root in profile_search_path(profiles):
        for p in sorted((root / SPECS_SUBDIR).glob("*.toml")):
            out.setdefault(p.stem, p)
    return out


def load_spec(
    device: str, spec_file: str | Path | None = None, profiles: str | Path | None = None
) -> DeviceSpec:
    """``--spec FILE`` when given, else ``device``'s spec on the search path."""
    return parse_spec(spec_file) if spec_file else find_spec(device, profiles)


def find_spec(device: str, profiles: str | Path | None = None) -> DeviceSpec:
    specs = spec_paths(profiles)
    if device not in specs:
        if device == "host":
            raise ArtefactError(
                "no spec for 'host' yet: fit one for this machine with 'hapi profile --calibrate'"
            )
        raise unknown_name("device spec", device, specs)
    return parse_spec(specs[device])


def write_spec(spec: DeviceSpec, profiles: str | Path | None = None, header: str = "") -> Path:
    from hapi_dse.atomic import write_text

    dest = default_profiles_out(profiles) / SPECS_SUBDIR / f"{spec.name}.toml"
    write_text(dest, spec.to_toml(header))
    return dest
