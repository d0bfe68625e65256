"""``hapi export --format staged``: one graph per stage, a manifest and a standalone runtime.

Each stage graph computes its blocks, its exit head and the exit decision (thresholds and
temperatures are inputs, fed from ``manifest.json``); :mod:`~hapi_dse.deploy.staged_runtime`,
copied into the directory, chains them with numpy and onnxruntime alone. Each stage is
checked against PyTorch as it is exported, and the whole directory end to end: the shipped
runtime against the one-graph PyTorch design (:class:`~hapi_dse.graphs.graph.DesignGraph`)
on every checked exit path.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.atomic import write_json
from hapi_dse.cost.policies import get_policy
from hapi_dse.deploy.checks import CheckedDesign, CheckPlan, check_info
from hapi_dse.deploy.load import EXPORT_SCHEMA_VERSION, MANIFEST, RUNTIME_FILE, load_runtime
from hapi_dse.onnx_tools import CHECK_ATOL, ExportMismatchError
from hapi_dse.outdirs import atomic_dir
from hapi_dse.provenance import sha256_file


def export_staged(
    checked: CheckedDesign,
    common: dict[str, Any],
    *,
    out: Path,
    opset: int,
    layout_anchor: bool,
    overwrite: bool,
) -> dict[str, Any]:
    """Write the design as a staged export directory ``out`` (replacing a previous staged
    export only with ``overwrite``), checked as ``checked`` plans; returns the sidecar
    content (``common`` and what this export adds)."""
    import torch

    from hapi_dse.graphs import compose
    from hapi_dse.graphs.graph import (
        DesignGraph,
        StageGraph,
        build_stages,
        exit_heads,
        stage_io,
    )
    from hapi_dse.onnx_tools.network import with_network, write_checked

    net, design, temps = checked.net, checked.design, checked.temps
    x, plan = checked.x, checked.plan
    m = len(design.exits)
    stages = build_stages(net, design, layout_anchor).eval()
    # features entering each stage for the check samples (and the example)
    idx = sorted(set(plan.samples) | {0})
    feats = [torch.from_numpy(x[idx])]
    with torch.no_grad():
        for st in stages[:-1]:
            feats.append(st(feats[-1])[0])
    # the stages are cut out of the network exported once (cached), not exported one by one
    with atomic_dir(out, kind="staged-export", overwrite=overwrite) as tmp:

        def write_stages(network: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            manifest_stages: list[dict[str, Any]] = []
            diffs_all: dict[str, dict[str, float]] = {}
            for i, st in enumerate(stages):
                last = i == m
                module = StageGraph(st, design.policy, last).eval()
                ins, outs = stage_io(design.policy, last)
                xs = [feats[i][j : j + 1] for j in range(len(idx))]
                inputs: list[tuple[torch.Tensor, ...]]
                if len(ins) > 1:
                    thr = torch.tensor([design.exits[i].threshold], dtype=torch.float32)
                    tmp_t = torch.tensor([temps[i]], dtype=torch.float32)
                    inputs = [(xj, thr, tmp_t) for xj in xs]
                else:
                    inputs = [(xj,) for xj in xs]
                fname = f"stage_{i}.onnx"
                graph = compose.stage_model(network, net, design, i, layout_anchor=layout_anchor)
                diffs_all[fname] = write_checked(
                    graph, tmp / fname, module, inputs, input_names=ins, output_names=outs
                )
                entry: dict[str, Any] = {
                    "file": fname,
                    "sha256": sha256_file(tmp / fname),
                    "inputs": ins,
                    "outputs": outs,
                    "input_shape": list(xs[0].shape),
                }
                if not last:
                    entry.update(
                        {
                            "exit_index": i,
                            "position": design.exits[i].position,
                            "head": design.exits[i].head,
                        }
                    )
                manifest_stages.append(entry)
            return manifest_stages, diffs_all

        # a cached network graph whose stages fail their check is exported again
        network, (manifest_stages, diffs_all) = with_network(
            net, tuple(feats[0][:1].shape), write_stages, heads=exit_heads(design), opset=opset
        )
        opset = network.opset
        manifest = {
            "schema_version": EXPORT_SCHEMA_VERSION,
            "format": "staged",
            "policy": design.policy,
            "patience": design.patience,
            "thresholds": [e.threshold for e in design.exits],
            "temperatures": temps,
            "stages": manifest_stages,
            **{
                k: common[k]
                for k in (
                    "model_id",
                    "design_sha256",
                    "exits",
                    "classes",
                    "normalization",
                    "input_shape",
                )
            },
        }
        write_json(tmp / MANIFEST, manifest)
        shutil.copyfile(Path(__file__).with_name(RUNTIME_FILE), tmp / RUNTIME_FILE)
        # end-to-end: the shipped runtime against the PyTorch design graph
        whole = DesignGraph(net, design, layout_anchor=layout_anchor, eager=True).eval()
        worst = _check_staged(tmp, whole, x, plan, temps)
    info = dict(common)
    info.update(
        {
            "file": MANIFEST,
            "opset": opset,
            "exporter": network.exporter,
            "stages": [s["file"] for s in manifest_stages],
            "layout_anchor": layout_anchor,
            "thresholds_in": f"{MANIFEST} ('thresholds', 'temperatures'), fed by the runtime "
            "to each stage graph's 'threshold' and 'temperature' inputs",
            "check": {
                **check_info(plan, {"logits": worst[0], "exit_index": worst[1]}, "full"),
                "per_stage_max_abs_diff": diffs_all,
            },
            "requires": {
                "runtime": f"python with numpy and onnxruntime: {RUNTIME_FILE} (no hapi); "
                f"the stage graphs are standard ai.onnx opset {opset}",
                "usage": f"python {RUNTIME_FILE} input.npy  or  "
                "StagedModel(dir).run(x) -> (logits, exit_index)",
            },
        }
    )
    return info


def _check_staged(
    root: Path, whole: Any, x: np.ndarray, plan: CheckPlan, temps: list[float]
) -> tuple[float, float]:
    import torch

    runtime = load_runtime(root)
    staged = runtime.StagedModel(root, threads=1)
    worst_logits = worst_idx = 0.0
    for s, thr in zip(plan.samples, plan.thresholds, strict=True):
        xi = x[s : s + 1]
        staged.set_thresholds(thr)
        got_z, got_i = staged.run(xi)
        params = (
            ()
            if not get_policy(staged.policy).uses_threshold or not thr
            else (torch.tensor(thr, dtype=torch.float32), torch.tensor(temps, dtype=torch.float32))
        )
        with torch.no_grad():
            ref_z, ref_i = whole(torch.from_numpy(xi), *params)
        worst_logits = max(worst_logits, float(np.max(np.abs(got_z - ref_z.numpy()))))
        worst_idx = max(worst_idx, float(abs(got_i - int(ref_i[0]))))
    if not (worst_logits <= CHECK_ATOL and worst_idx == 0):
        diffs = {"logits": worst_logits, "exit_index": worst_idx}
        raise ExportMismatchError(root, diffs, CHECK_ATOL)
    return worst_logits, worst_idx
