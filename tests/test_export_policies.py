"""The exported exit rules are the cost model's, for every policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hapi_dse.cost import SegmentCosts

DESIGNS = {
    "max_softmax": {
        "policy": "max_softmax",
        "policy_params": {},
        "exits": [
            {"position": 1, "head": "linear", "threshold": 0.55},
            {"position": 4, "head": "mlp", "threshold": 0.7},
        ],
    },
    "entropy": {
        "policy": "entropy",
        "policy_params": {},
        "exits": [
            {"position": 2, "head": "conv", "threshold": 0.5},
            {"position": 5, "head": "linear", "threshold": 0.6},
        ],
    },
    "exit_after_last_block": {
        "policy": "max_softmax",
        "policy_params": {},
        "exits": [
            {"position": 3, "head": "conv", "threshold": 0.5},
            {"position": 8, "head": "linear", "threshold": 0.5},
        ],
    },
    "patience": {
        "policy": "patience",
        "policy_params": {"patience": 2},
        "exits": [
            {"position": 1, "head": "linear", "threshold": 0.0},
            {"position": 3, "head": "conv", "threshold": 0.0},
            {"position": 6, "head": "mlp", "threshold": 0.0},
        ],
    },
}


@pytest.mark.parametrize("policy", sorted(DESIGNS))
def test_graph_decisions_match_the_cost_model(tiny_run: Path, policy: str) -> None:
    import torch

    from hapi_dse.cost.design import Design
    from hapi_dse.cost.model import simulate
    from hapi_dse.deploy.inputs import exit_temperatures, load_samples
    from hapi_dse.graphs.graph import DesignGraph, build_stages, decide, input_names
    from hapi_dse.run import RunDir

    run = RunDir(tiny_run)
    stats = run.stats("test")
    doc = json.loads(json.dumps(DESIGNS[policy]))
    for e in doc["exits"]:  # thresholds that split this (barely trained) model's samples
        col = stats.column(e["position"], e["head"])
        if doc["policy"] == "max_softmax":
            e["threshold"] = float(np.quantile(stats.confidence[:, col], 0.6))
        elif doc["policy"] == "entropy":
            e["threshold"] = float(np.quantile(stats.entropy[:, col], 0.4))
    design = Design.from_dict(doc)
    temps = exit_temperatures(design, run)
    net = run.load_model()
    samples = load_samples(run, "test")
    assert np.array_equal(stats.labels.astype(np.int64), samples.y)
    stages = build_stages(net, design, layout_anchor=True).eval()
    logits = []
    with torch.no_grad():
        h = torch.from_numpy(samples.x)
        for st in stages:
            h, z = st(h)
            logits.append(z.numpy())
    thr = [e.threshold for e in design.exits]
    ours = decide(design.policy, design.patience, logits, thr, temps)
    sim, _ = simulate(design, stats, SegmentCosts.zero(stats))
    assert np.mean(ours == sim) >= 0.995
    assert len(np.unique(sim)) >= 2  # the design really splits the samples
    # the torch graph (torch.cond, eager) takes the same paths as the vectorised rule
    graph = DesignGraph(net, design).eval()
    params = ()
    if len(input_names(design)) > 1:
        params = (torch.tensor(thr, dtype=torch.float32), torch.tensor(temps))
    with torch.no_grad():
        for i in range(0, len(samples.x), max(len(samples.x) // 8, 1)):
            z, idx = graph(torch.from_numpy(samples.x[i : i + 1]), *params)
            assert int(idx[0]) == int(ours[i])
            np.testing.assert_allclose(z.numpy(), logits[int(ours[i])][i : i + 1], atol=1e-5)


def test_patience_export_has_no_threshold_inputs(tiny_run: Path, tmp_path: Path) -> None:
    import onnx

    from hapi_dse.deploy import ExportConfig, export_design

    mid = json.loads((tiny_run / "model.json").read_text())["model_id"]
    doc = {**DESIGNS["patience"], "model_id": mid}
    doc["exits"] = doc["exits"][:2]
    (tmp_path / "d.json").write_text(json.dumps(doc))
    out = tmp_path / "p.onnx"
    info = export_design(
        ExportConfig(source=tmp_path / "d.json", out=out, model=str(tiny_run), check_samples=128)
    )
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["input"]
    assert info["graph"]["if_nodes"] == 1  # the first exit cannot fire under patience 2
    assert info["check"]["passed"]
