"""Deployment probes: a few real one-graph exports that ``hapi profile`` times path by path.

A profile times each block and head alone; what the deployed graph adds (exit decisions,
``If`` dispatch, stage entries, blocks inside branches, weights gone cold: the terms of
:mod:`hapi_dse.cost.deployment`) shows only inside a real export. The probes are built by
the same function as ``hapi export`` (:func:`hapi_dse.graphs.single.write_single_graph`),
with exits spread over the backbone, one probe per exit policy (two for ``max_softmax``) and
the plain backbone with no exit (which pins what blocks cost inside one graph apart from the
exit decisions), the model's head types in turn, and thresholds that are graph inputs: each
probe comes with one
*feed* per exit path (thresholds that force that path) so that a board can time every path
from the files alone. ``patience`` cannot be forced through inputs: its feeds are random
images, and the timing reads which path each one takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.cost.design import Design, Exit
from hapi_dse.cost.policies import get_policy

#: exit positions of each probe, as fractions of the backbone (deduplicated per model)
PROBES: tuple[tuple[str, str, int, tuple[float, ...]], ...] = (
    ("probe_backbone", "max_softmax", 0, ()),
    ("probe_max_softmax_1", "max_softmax", 0, (0.3,)),
    ("probe_max_softmax_4", "max_softmax", 0, (0.0, 0.25, 0.5, 0.8)),
    ("probe_entropy_2", "entropy", 0, (0.1, 0.6)),
    ("probe_patience_3", "patience", 2, (0.15, 0.45, 0.7)),
)
#: the policies the probes time, in order: the deployment terms' decision costs
#: (:mod:`hapi_dse.profiling.graph_terms`)
PROBED_POLICIES = tuple(dict.fromkeys(policy for _, policy, _, _ in PROBES))
PATIENCE_FEEDS = 8


def probe_designs(num_blocks: int, heads: list[str]) -> list[tuple[str, Design]]:
    """The probe designs for a backbone of ``num_blocks`` blocks with these head types
    (taken in turn over all the probes' exits, so that every type runs in some probe)."""
    order = sorted(heads)
    last = max(num_blocks - 2, 0)  # leave at least one block after the last exit if possible
    out = []
    k = 0
    for name, policy, patience, fractions in PROBES:
        positions = sorted({min(round(f * last), last) for f in fractions})
        exits = []
        for p in positions:
            threshold = 0.5 if get_policy(policy).uses_threshold else 0.0
            exits.append(Exit(p, order[k % len(order)], threshold))
            k += 1
        out.append((name, Design(tuple(exits), policy=policy, patience=patience)))
    return out


def probe_feeds(design: Design, input_shape: tuple[int, ...], seed: int) -> list[dict[str, Any]]:
    """One feed per path (forced thresholds) or, for patience, random images."""
    m = len(design.exits)
    if m == 0:  # one path, no threshold input
        return [{"image_seed": seed, "thresholds": None}]
    forcing = get_policy(design.policy).forcing
    if forcing is not None:
        always, never = forcing
        return [
            {"image_seed": seed, "thresholds": [never] * i + [always] * (m - i)}
            for i in range(m + 1)
        ]
    return [{"image_seed": seed + k, "thresholds": None} for k in range(PATIENCE_FEEDS)]


def probe_image(input_shape: tuple[int, ...], image_seed: int) -> np.ndarray:
    return np.random.default_rng(image_seed).standard_normal(input_shape).astype(np.float32)


def export_probes(
    net: Any,
    heads: list[str],
    input_shape: tuple[int, ...],
    out_dir: Path,
    *,
    opset: int,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Export every probe to ``out_dir``; return their manifest entries (``segments.json``)."""
    from hapi_dse.graphs.single import write_single_graph

    entries = []
    for name, design in probe_designs(net.backbone.num_blocks, heads):
        feeds = probe_feeds(design, input_shape, seed)
        images = [probe_image(input_shape, f["image_seed"]) for f in feeds]
        checks: list[tuple[np.ndarray, ...]] = [
            (img,) if f["thresholds"] is None else (img, np.asarray(f["thresholds"], np.float32))
            for img, f in zip(images, feeds, strict=True)
        ]
        file = f"{name}.onnx"
        write_single_graph(
            net,
            design,
            [1.0] * len(design.exits),
            out_dir / file,
            example=checks[0][:1],
            checks=checks,
            opset=opset,
        )
        entries.append({"name": name, "file": file, **design.to_dict(), "feeds": feeds})
    return entries
