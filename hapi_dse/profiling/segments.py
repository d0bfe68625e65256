"""Cut an early-exit network into segments and export each one to ONNX.

A segment is a backbone block, a head at one position, or the final classifier. The export
directory also holds ``backbone.onnx`` (all blocks as one graph: the monolithic reference for
the fidelity of summing segments) and ``noop.onnx`` (one Identity: the bare cost of a
``session.run`` call), and a manifest ``segments.json`` that is everything a board needs to
profile them (:mod:`~hapi_dse.profiling.manifest`, standard library only; its names are
importable from here too). torch and onnx are imported only by the export itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hapi_dse.errors import ArtefactError
from hapi_dse.onnx_tools import DEFAULT_OPSET
from hapi_dse.profiling.manifest import (
    MANIFEST,
    Manifest,
    Segment,
)
from hapi_dse.run import REGISTERED_ONLY, CodeTrust, RunDir

__all__ = ["export_segments"]

log = logging.getLogger(__name__)


def _noop_model(input_shape: tuple[int, ...], opset: int) -> Any:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(input_shape))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "noop", [x], [y])
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hapi"
    )


def _graph_name(kind: str, position: int, head: str) -> str:
    """The file stem of an exported graph (``noop.onnx`` is built by :func:`_write_noop`)."""
    return {
        "block": f"block_{position:03d}",
        "head": f"head_{position:03d}_{head}",
        "final": "final",
        "backbone": "backbone",
    }[kind]


@dataclass(frozen=True)
class _Job:
    """One module to export: ``source`` is the block whose output feeds it (-1: the input)."""

    kind: str
    position: int
    head: str  # the head type for kind "head", "final" for the final, "" otherwise
    module: Any  # torch.nn.Module
    source: int

    @property
    def key(self) -> tuple[str, int, str]:
        """The (segment, position, head) of its row in ``flops.csv`` and the table."""
        return (self.kind, self.position, self.head)

    @property
    def name(self) -> str:
        return _graph_name(self.kind, self.position, self.head)


def _segment_flops(run: RunDir) -> dict[tuple[str, int, str], int]:
    """FLOPs at batch 1 of every block, head and final, from the run's ``flops.csv``.

    ``hapi train`` writes the file (DESIGN 2.1), so profiling never imports training; a run
    without it is refused before anything is exported.
    """
    p = run.path / "flops.csv"
    if not p.is_file():
        raise ArtefactError(
            f"{p}: not found; profiling reads each segment's FLOPs from the flops.csv that "
            "'hapi train' writes: restore it or train the run again"
        )
    return {
        (r["segment"], int(r["position"]), r["head"] or ""): int(r["flops"]) for r in run.flops()
    }


def _jobs(net: Any) -> list[_Job]:
    """Every block, every head at every position, the final classifier, the whole backbone."""
    from torch import nn

    jobs = [_Job("block", i, "", block, i - 1) for i, block in enumerate(net.backbone.blocks)]
    jobs += [_Job("head", pos, head, net.head(pos, head), pos) for pos, head in net.columns[:-1]]
    last = net.backbone.num_blocks - 1
    jobs.append(_Job("final", last, "final", net.backbone.classifier, last))
    jobs.append(_Job("backbone", last, "", nn.Sequential(*net.backbone.blocks).eval(), -1))
    return jobs


def _check_inputs(net: Any, in_shape: tuple[int, ...], seed: int) -> Callable[[int], Any]:
    """Two seeded random inputs, and the features after every block for each: ``at(pos)`` is
    the pair of tensors that feeds a segment whose source is block ``pos`` (-1: the input)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(in_shape, generator=gen)
    x1 = torch.randn(in_shape, generator=gen)
    with torch.no_grad():
        feats0, _ = net.backbone.forward_intermediates(x0)
        feats1, _ = net.backbone.forward_intermediates(x1)

    def at(pos: int) -> tuple[Any, Any]:
        return (x0, x1) if pos < 0 else (feats0[pos], feats1[pos])

    return at


def _cut_graph(
    job: _Job,
    network: Any,
    inputs: tuple[Any, Any],
    out: Path,
    flops: dict[tuple[str, int, str], int],
    *,
    batch: int,
) -> tuple[Segment, dict[str, float]]:
    """Cut ``job`` out of the exported network, check it on both inputs (``onnx.checker``,
    onnxruntime vs PyTorch) and write it; return its segment and max abs differences."""
    from hapi_dse.onnx_tools.network import block_name, head_name, write_checked

    a, b = inputs
    fname = f"{job.name}.onnx"
    source = "x" if job.source < 0 else block_name(job.source)
    target = block_name(job.position) if job.kind in ("block", "backbone") else ""
    target = target or head_name(job.position, job.head)
    diffs = write_checked(network.cut(source, target), out / fname, job.module, [(a,), (b,)])
    if job.kind == "backbone":
        fl = sum(f for k, f in flops.items() if k[0] == "block")
    else:
        fl = flops.get(job.key, 0)
    seg = Segment(
        kind=job.kind,
        position=job.position,
        head=job.head,
        file=fname,
        input_name="x",
        input_shape=tuple(int(d) for d in a.shape),
        output_name="y",
        flops=fl * batch,
        params=sum(p.numel() for p in job.module.parameters()),
    )
    return seg, diffs


def _export_graphs(
    net: Any,
    inputs_at: Callable[[int], Any],
    out: Path,
    flops: dict[tuple[str, int, str], int],
    *,
    batch: int,
    opset: int,
    dynamo: bool,
    on_step: Callable[[str], None] | None,
) -> tuple[list[Segment], dict[str, dict[str, float]], int]:
    """Export the whole network once (:mod:`hapi_dse.onnx_tools.network`, cached) and cut
    every job of :func:`_jobs` out of it; return the segments, each file's max abs
    difference vs PyTorch per output, and the opset the exporter wrote (the dynamo exporter
    may raise the one asked for). A cached network whose cuts fail their check is exported
    again."""
    from hapi_dse.onnx_tools.network import with_network

    def cut_all(network: Any) -> tuple[list[Segment], dict[str, dict[str, float]]]:
        segments: list[Segment] = []
        checks: dict[str, dict[str, float]] = {}
        for job in _jobs(net):
            if on_step:
                on_step(job.name)
            seg, diffs = _cut_graph(job, network, inputs_at(job.source), out, flops, batch=batch)
            segments.append(seg)
            checks[seg.file] = diffs
        return segments, checks

    in_shape = tuple(int(d) for d in inputs_at(-1)[0].shape)
    network, (segments, checks) = with_network(
        net, in_shape, cut_all, opset=opset, dynamo=dynamo,
        on_export=(lambda: on_step("network")) if on_step else None,
    )  # fmt: skip
    return segments, checks, network.opset


def _write_noop(out: Path, in_shape: tuple[int, ...], opset: int) -> Segment:
    """``noop.onnx``: one Identity on the input, the bare cost of a ``session.run`` call."""
    import onnx

    from hapi_dse.atomic import atomic_path

    noop = _noop_model(in_shape, opset)
    onnx.checker.check_model(noop, full_check=True)
    with atomic_path(out / "noop.onnx") as tmp:
        onnx.save(noop, str(tmp))
    return Segment(
        kind="noop",
        position=-1,
        head="",
        file="noop.onnx",
        input_name="x",
        input_shape=in_shape,
        output_name="y",
    )


def _export_probes(
    net: Any, arch: dict[str, Any], in_shape: tuple[int, ...], out: Path, *, opset: int, seed: int
) -> list[dict[str, Any]]:
    """The deployment probes (:mod:`hapi_dse.graphs.probes`): real one-graph exports whose
    timings give the sidecar's ``deployment`` terms."""
    from hapi_dse.graphs.probes import export_probes

    return export_probes(net, list(arch["heads"]), in_shape, out, opset=opset, seed=seed)


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
    code: CodeTrust = REGISTERED_ONLY,
) -> Manifest:
    """Export every block, head, the final classifier, the backbone and a no-op graph, and
    (``with_probes``, batch 1) the deployment probes of :mod:`hapi_dse.graphs.probes`.
    ``code``: what code the run's model.json may run (:class:`~hapi_dse.run.CodeTrust`).

    Each graph is checked (``onnx.checker`` full check, onnxruntime vs PyTorch on two
    inputs at tolerance 1e-4). Segment FLOPs come from the run's ``flops.csv`` (times
    ``batch``). Returns the manifest, also written to ``out_dir``.
    """
    from hapi_dse.atomic import write_json
    from hapi_dse.provenance import provenance

    # the run's weights and flops.csv before any export
    net = run.load_model(code).eval()
    flops = _segment_flops(run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arch = run.model["arch"]
    in_shape = (batch, *[int(d) for d in arch["input_shape"]])
    inputs_at = _check_inputs(net, in_shape, seed)

    segments, checks, actual_opset = _export_graphs(
        net, inputs_at, out, flops, batch=batch, opset=opset, dynamo=dynamo, on_step=on_step
    )
    segments.append(_write_noop(out, in_shape, actual_opset))
    probes: list[dict[str, Any]] = []
    if with_probes and batch == 1:  # the one-graph export is batch 1
        if on_step:
            on_step("deployment probes")
        probes = _export_probes(net, arch, in_shape, out, opset=actual_opset, seed=seed)
    worst = max(max(d.values(), default=0.0) for d in checks.values())
    # no folder named: it is a scratch one (a temporary, or --export-dir's before its swap)
    log.info("exported %d graphs (max abs difference vs PyTorch %.2g)", len(segments), worst)
    exporter = "dynamo" if dynamo else "legacy"
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
