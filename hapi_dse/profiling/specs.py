"""Device spec files ``profiles/specs/DEVICE.toml`` for modelled tables.

A spec describes the cores one inference uses: effective FP32 FLOP/s (per ONNX operator type
where known), memory bandwidth, a fixed cost per operator and per ``session.run`` call, and
the active power. Every figure in a shipped spec carries its public source in a comment.

```toml
name = "raspberry-pi-4"
description = "..."
threads = 1
flops_per_s = 6.0e9              # default effective FLOP/s (Conv, Gemm, MatMul)
mem_bandwidth_bytes_per_s = 4.0e9
op_overhead_us = 4.0             # per executed operator
call_overhead_us = 30.0          # per session.run
active_power_w = 3.4             # board power while one core runs the model
[op_flops_per_s]                 # optional, per ONNX op type
Gemm = 3.0e9
[op_overhead_us_by_type]         # optional, per ONNX op type
```
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hapi_dse.errors import ArtefactError, unknown_name
from hapi_dse.paths import SPECS_SUBDIR, default_profiles_out, profile_search_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

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


@dataclass
class DeviceSpec:
    """The figures the roofline model needs; see the module docstring for the file format."""

    name: str
    flops_per_s: float
    mem_bandwidth_bytes_per_s: float
    op_overhead_us: float
    call_overhead_us: float
    active_power_w: float
    description: str = ""
    threads: int = 1
    op_flops_per_s: dict[str, float] = field(default_factory=dict)
    op_overhead_us_by_type: dict[str, float] = field(default_factory=dict)
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def flops_rate(self, op_type: str) -> float:
        return self.op_flops_per_s.get(op_type, self.flops_per_s)

    def op_overhead_s(self, op_type: str) -> float:
        return self.op_overhead_us_by_type.get(op_type, self.op_overhead_us) * 1e-6

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "threads": self.threads,
            "flops_per_s": self.flops_per_s,
            "mem_bandwidth_bytes_per_s": self.mem_bandwidth_bytes_per_s,
            "op_overhead_us": self.op_overhead_us,
            "call_overhead_us": self.call_overhead_us,
            "active_power_w": self.active_power_w,
            "op_flops_per_s": dict(self.op_flops_per_s),
            "op_overhead_us_by_type": dict(self.op_overhead_us_by_type),
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
        for key, table in (
            ("op_flops_per_s", self.op_flops_per_s),
            ("op_overhead_us_by_type", self.op_overhead_us_by_type),
        ):
            if table:
                lines += ["", f"[{key}]", *(f"{k} = {v:.6g}" for k, v in sorted(table.items()))]
        return "\n".join(lines) + "\n"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_spec(path: str | Path) -> DeviceSpec:
    """Read and validate one spec file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ArtefactError(f"{path}: cannot read ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ArtefactError(f"{path}: not valid TOML ({e})") from None
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ArtefactError(f"{path}: missing key(s) {', '.join(missing)}")
    nums: dict[str, float] = {}
    for k in REQUIRED:
        v = data[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ArtefactError(f"{path}: {k} = {v!r}, expected a finite number >= 0")
        nums[k] = float(v)
    for k in ("flops_per_s", "mem_bandwidth_bytes_per_s"):
        if nums[k] <= 0:
            raise ArtefactError(f"{path}: {k} must be > 0")
    tables: dict[str, dict[str, float]] = {}
    for key in ("op_flops_per_s", "op_overhead_us_by_type"):
        t = data.get(key, {})
        if not isinstance(t, dict) or any(
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or not math.isfinite(v)
            or (v <= 0 and key == "op_flops_per_s")
            or v < 0
            for v in t.values()
        ):
            raise ArtefactError(f"{path}: [{key}] must map ONNX op types to positive numbers")
        tables[key] = {str(k): float(v) for k, v in t.items()}
    threads = data.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ArtefactError(f"{path}: threads = {threads!r}, expected an integer >= 1")
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise ArtefactError(f"{path}: {key} = {data[key]!r}, expected a string")
    known = {
        *REQUIRED,
        "name",
        "description",
        "threads",
        "op_flops_per_s",
        "op_overhead_us_by_type",
    }
    return DeviceSpec(
        name=str(data.get("name", path.stem)),
        description=str(data.get("description", "")),
        threads=threads,
        op_flops_per_s=tables["op_flops_per_s"],
        op_overhead_us_by_type=tables["op_overhead_us_by_type"],
        path=path,
        extra={k: v for k, v in data.items() if k not in known},
        **nums,
    )


def spec_paths(profiles: str | Path | None = None) -> dict[str, Path]:
    """Every spec on the search path, by device name (earlier directories win)."""
    out: dict[str, Path] = {}
    for root in profile_search_path(profiles):
        for p in sorted((root / SPECS_SUBDIR).glob("*.toml")):
            out.setdefault(p.stem, p)
    return out


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
