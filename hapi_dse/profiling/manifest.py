"""The manifest ``segments.json`` of an export directory: everything a board needs to profile
the segments exported elsewhere (``hapi profile --onnx-dir``).

Each :class:`Segment` is one ONNX file to time (a block, a head at one position, the final
classifier, the whole backbone or a no-op graph) with its input shape, FLOPs and parameter
count. Standard library only: no torch, no onnx, no onnxruntime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hapi_dse.errors import ArtefactError
from hapi_dse.readers import read_json

MANIFEST = "segments.json"
MANIFEST_SCHEMA = 1


@dataclass(frozen=True)
class Segment:
    """One ONNX file to time: ``kind`` is block, head, final, backbone or noop."""

    kind: str
    position: int
    head: str
    file: str  # relative to the export directory
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    flops: int = 0
    params: int = 0

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.kind, self.position, self.head)

    @property
    def label(self) -> str:
        if self.kind in ("block", "final", "backbone", "noop"):
            return f"{self.kind}{self.position if self.kind == 'block' else ''}"
        return f"p{self.position}_{self.head}"

    @property
    def is_table_row(self) -> bool:
        return self.kind in ("block", "head", "final")


@dataclass
class Manifest:
    """The exported segments of one model at one batch size."""

    root: Path
    model_id: str
    batch: int
    segments: list[Segment]
    opset: int = 0
    exporter: str = ""
    export_check: dict[str, dict[str, float]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    #: deployment probes (hapi_dse.graphs.probes): name, file, design keys, feeds
    probes: list[dict[str, Any]] = field(default_factory=list)

    def table_segments(self) -> list[Segment]:
        return [s for s in self.segments if s.is_table_row]

    def get(self, kind: str) -> Segment | None:
        return next((s for s in self.segments if s.kind == kind), None)

    def path(self, seg: Segment) -> Path:
        return self.root / seg.file

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": MANIFEST_SCHEMA,
            "model_id": self.model_id,
            "batch": self.batch,
            "opset": self.opset,
            "exporter": self.exporter,
            "segments": [{**asdict(s), "input_shape": list(s.input_shape)} for s in self.segments],
            "export_check": self.export_check,
            "provenance": self.provenance,
            "probes": self.probes,
        }


def _check_segment(s: Segment, i: int) -> None:
    """The types a segment's fields must have (a file can hold anything JSON holds)."""
    for name in ("kind", "head", "file", "input_name", "output_name"):
        if not isinstance(getattr(s, name), str):
            raise TypeError(f"segments[{i}].{name} is {getattr(s, name)!r}, expected a string")
    for name in ("position", "flops", "params"):
        v = getattr(s, name)
        low = -1 if name == "position" and s.kind == "noop" else 0  # noop.onnx: position -1
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"segments[{i}].{name} is {v!r}, expected an integer >= {low}")
    if not s.input_shape or min(s.input_shape) < 1:
        raise ValueError(f"segments[{i}].input_shape is {list(s.input_shape)}, expected sizes >= 1")


def load_manifest(root: str | Path) -> Manifest:
    """Read ``segments.json`` from an export directory and check its files exist."""
    root = Path(root)
    p = root / MANIFEST
    if not p.exists():
        raise ArtefactError(
            f"{p}: not found; export segments with 'hapi profile --model RUN --export-dir "
            f"{root} --export-only'"
        )
    data = read_json(p)  # one line for any parse failure or limit
    try:
        segs = [
            Segment(**{**s, "input_shape": tuple(int(d) for d in s["input_shape"])})
            for s in data["segments"]
        ]
        man = Manifest(
            root=root,
            model_id=str(data["model_id"]),
            batch=int(data["batch"]),
            segments=segs,
            opset=int(data.get("opset", 0)),
            exporter=str(data.get("exporter", "")),
            export_check=dict(data.get("export_check", {})),
            provenance=dict(data.get("provenance", {})),
            probes=[dict(e) for e in data.get("probes", [])],
        )
        for i, s in enumerate(segs):
            _check_segment(s, i)
        files = [s.file for s in segs] + [str(e["file"]) for e in man.probes]
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ArtefactError(f"{p}: malformed manifest ({type(e).__name__}: {e})") from None
    bad = [f for f in files if Path(f).name != f or f in ("", ".", "..")]
    if bad:
        raise ArtefactError(f"{p}: file names must be plain names inside {root}, got {bad[0]!r}")
    from hapi_dse.profiling.names import NAME_RULE, valid_name

    if not valid_name(man.model_id):  # it names the profile table's file
        raise ArtefactError(f"{p}: model_id {man.model_id!r} is not a plain name ({NAME_RULE})")
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise ArtefactError(f"{root}: manifest lists missing files: {', '.join(missing[:5])}")
    if not man.table_segments():
        raise ArtefactError(f"{p}: lists no block, head or final segments")
    return man
