"""Published whole-network latencies of the modelled devices, to check the device specs against.

hapi models devices it cannot reach from spec files (:mod:`hapi_dse.profiling.specs`). The
only ground truth for those models is what others measured and published: a reference network
(:mod:`hapi_dse.profiling.reference_nets`) run whole on the device by some runtime. The shipped
file ``hapi_dse/shipped_profiles/published.toml`` records each such figure with its source:

```toml
[[check]]
device = "raspberry-pi-4"        # a spec name (shipped_profiles/specs/DEVICE.toml)
measured_on = ""                 # optional: the hardware, when it is a stand-in for device
model = "resnet18"               # a key of reference_nets.REFERENCE_NETS
input = 224                      # square input size
runtime = "ncnn (benchncnn)"
threads = 1                      # 0: the source does not say
precision = "fp32"               # fp32, fp16 or int8
batch = 1
measured_ms = 226.49
source = "title of the page"
url = "https://..."
note = "how it was measured, and anything that differs from the reference network"
```

The file sits beside ``specs/``, not in it: every ``specs/*.toml`` is read as a device spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hapi_dse.errors import ArtefactError
from hapi_dse.paths import SHIPPED_PROFILES
from hapi_dse.readers import read_toml

#: the shipped file of published figures
PUBLISHED_PATH = SHIPPED_PROFILES / "published.toml"
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class PublishedCheck:
    """One published whole-network latency (see the module docstring for the fields)."""

    device: str
    model: str
    input: int
    runtime: str
    threads: int
    precision: str
    batch: int
    measured_ms: float
    source: str
    url: str
    note: str
    measured_on: str = ""

    @property
    def proxy(self) -> bool:
        """Whether the figure was measured on other hardware than ``device`` itself."""
        return bool(self.measured_on)


_TEXT = ("device", "model", "runtime", "precision", "source", "url", "note", "measured_on")
_OPTIONAL = {"measured_on": ""}
_KEYS = {f.name for f in fields(PublishedCheck)}


def _check_entry(entry: Any, where: str) -> PublishedCheck:
    if not isinstance(entry, dict):
        raise ArtefactError(f"{where}: expected a table of fields, got {entry!r}")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ArtefactError(f"{where}: unknown key(s) {', '.join(unknown)}")
    missing = sorted(_KEYS - set(entry) - set(_OPTIONAL))
    if missing:
        raise ArtefactError(f"{where}: missing key(s) {', '.join(missing)}")
    values = {**_OPTIONAL, **entry}
    for key in _TEXT:
        v = values[key]
        if not isinstance(v, str) or (key not in ("note", "measured_on") and not v.strip()):
            raise ArtefactError(f"{where}: {key} = {v!r}, expected a non-empty string")
    if values["precision"] not in PRECISIONS:
        raise ArtefactError(
            f"{where}: precision = {values['precision']!r}, expected one of {', '.join(PRECISIONS)}"
        )
    for key, low in (("input", 1), ("batch", 1), ("threads", 0)):
        v = values[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ArtefactError(f"{where}: {key} = {v!r}, expected an integer >= {low}")
    ms = values["measured_ms"]
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms <= 0:
        raise ArtefactError(f"{where}: measured_ms = {ms!r}, expected a finite number > 0")
    values["measured_ms"] = float(ms)
    return PublishedCheck(**values)


def load_published(path: str | Path | None = None) -> list[PublishedCheck]:
    """The ``[[check]]`` entries of ``path`` (default: the shipped file), validated."""
    path = Path(path) if path is not None else PUBLISHED_PATH
    data = read_toml(path)  # one line for any parse failure or limit
    extra = sorted(set(data) - {"check"})
    if extra:
        raise ArtefactError(f"{path}: unknown top-level key(s) {', '.join(extra)}")
    entries = data.get("check", [])
    if not isinstance(entries, list) or not entries:
        raise ArtefactError(f"{path}: expected one or more [[check]] tables")
    return [_check_entry(e, f"{path}: check #{i + 1}") for i, e in enumerate(entries)]
