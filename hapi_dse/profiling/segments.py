"""Cut an early-exit network into segments and export each one to ONNX.

A segment is a backbone block, a head at one position, or the final classifier. The export
directory also holds ``backbone.onnx`` (all blocks as one graph: the monolithic reference for
the fidelity of summing segments) and ``noop.onnx`` (one Identity: the bare cost of a
``session.run`` call), and a manifest ``segments.json`` that is everything a board needs to
profile them: :func:`load_manifest` uses only the standard library (no torch, no onnx).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hapi_dse.errors import ArtefactError
from hapi_dse.onnx_tools import DEFAULT_OPSET

if TYPE_CHECKING:
    from hapi_dse.run import RunDir

log = logging.getLogger(__name__)

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
    #: deployment probes (hapi_dse.deploy.probes): name, file, design keys, feeds
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


def load_manifest(root: str | Path) -> Manifest:
    """Read ``segments.json`` from an export directory and check its files exist."""
    root = Path(root)
    p = root / MANIFEST
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ArtefactError(
            f"{p}: not found; export segments with 'hapi profile --model RUN --export-dir "
            f"{root} --export-only'"
        ) from None
    except (OSError, ValueError) as e:
        raise ArtefactError(f"{p}: not valid JSON ({e})") from None
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
        files = [s.file for s in segs] + [str(e["file"]) for e in man.probes]
    except (KeyError, TypeError, ValueError) as e:
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


def _noop_model(input_shape: tuple[int, ...], opset: int) -> Any:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(input_shape))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "noop", [x], [y])
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hapi"
    )


def export_segments(
    run: RunDir,
    out_dir: str | Path,
    *,
    batch: int = 1,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = True,
    seed: int = 0,
    with_probes: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> Manifest:
    """Export every block, head, the final classifier, the backbone and a no-op graph, and
    (``with_probes``, batch 1) the deployment probes of :mod:`hapi_dse.deploy.probes`.

    Each graph is checked (``onnx.checker`` full check, onnxruntime vs PyTorch on two
    inputs at tolerance 1e-4). Returns the manifest, also written to ``out_dir``.
    """
    import onnx
    import torch
    from torch import nn

    from hapi_dse.onnx_tools import export_onnx
    from hapi_dse.provenance import atomic_path, provenance, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = run.load_model().eval()
    arch = run.model["arch"]
    in_shape = (batch, *[int(d) for d in arch["input_shape"]])
    try:
        flops_rows = {(r["segment"], r["position"], r["head"] or ""): r for r in run.flops()}
    except ArtefactError:
        from hapi_dse.training.flops import flops_table

        flops_rows = {
            (r["segment"], r["position"], r["head"] or ""): r
            for r in flops_table(net, tuple(arch["input_shape"]))
        }

    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(in_shape, generator=gen)
    x1 = torch.randn(in_shape, generator=gen)
    with torch.no_grad():
        feats0, _ = net.backbone.forward_intermediates(x0)
        feats1, _ = net.backbone.forward_intermediates(x1)

    def inputs_at(pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (x0, x1) if pos < 0 else (feats0[pos], feats1[pos])

    jobs: list[tuple[str, int, str, nn.Module, int]] = []
    for i, block in enumerate(net.backbone.blocks):
        jobs.append(("block", i, "", block, i - 1))
    for pos, head in net.columns[:-1]:
        jobs.append(("head", pos, head, net.head(pos, head), pos))
    last = net.backbone.num_blocks - 1
    jobs.append(("final", last, "final", net.backbone.classifier, last))
    jobs.append(("backbone", last, "", nn.Sequential(*net.backbone.blocks).eval(), -1))

    segments: list[Segment] = []
    checks: dict[str, dict[str, float]] = {}
    exporter = "dynamo" if dynamo else "legacy"
    actual_opset = opset
    for kind, pos, head, module, src in jobs:
        a, b = inputs_at(src)
        name = {
            "block": f"block_{pos:03d}",
            "head": f"head_{pos:03d}_{head}",
            "final": "final",
            "backbone": "backbone",
        }[kind]
        fname = f"{name}.onnx"
        if on_step:
            on_step(name)
        rep = export_onnx(
            module,
            (a,),
            out / fname,
            input_names=["x"],
            output_names=["y"],
            opset=opset,
            dynamo=dynamo,
            check_inputs=[(b,)],
        )
        actual_opset = rep.opset
        checks[fname] = rep.max_abs_diff
        key = (kind, pos, head if kind == "head" else ("final" if kind == "final" else ""))
        if kind == "backbone":
            fl = sum(int(r["flops"]) for k, r in flops_rows.items() if k[0] == "block")
        else:
            fl = int(flops_rows[key]["flops"]) if key in flops_rows else 0
        segments.append(
            Segment(
                kind=kind,
                position=pos,
                head=key[2],
                file=fname,
                input_name="x",
                input_shape=tuple(int(d) for d in a.shape),
                output_name="y",
                flops=fl * batch,
                params=sum(p.numel() for p in module.parameters()),
            )
        )
    noop = _noop_model(in_shape, actual_opset)
    onnx.checker.check_model(noop, full_check=True)
    with atomic_path(out / "noop.onnx") as tmp:
        onnx.save(noop, str(tmp))
    segments.append(
        Segment(
            kind="noop",
            position=-1,
            head="",
            file="noop.onnx",
            input_name="x",
            input_shape=in_shape,
            output_name="y",
        )
    )
    probes: list[dict[str, Any]] = []
    if with_probes and batch == 1:  # the one-graph export is batch 1
        from hapi_dse.deploy.probes import export_probes

        if on_step:
            on_step("deployment probes")
        probes = export_probes(
            net, list(arch["heads"]), in_shape, out, opset=actual_opset, seed=seed
        )
    worst = max(max(d.values(), default=0.0) for d in checks.values())
    log.info(
        "exported %d graphs to %s (max abs difference vs PyTorch %.2g)", len(segments), out, worst
    )
    man = Manifest(
        root=out,
        model_id=run.model_id,
        batch=batch,
        segments=segments,
        opset=actual_opset,
        exporter=exporter,
        export_check=checks,
        probes=probes,
        provenance=provenance(
            seed=seed,
            inputs={"model.json": run.path / "model.json", "weights.pt": run.path / "weights.pt"},
            settings={"batch": batch, "opset": opset, "exporter": exporter},
            libraries=("numpy", "torch", "onnx", "onnxruntime"),
        ),
    )
    write_json(out / MANIFEST, man.to_json())
    return man
