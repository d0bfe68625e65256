"""Adding an exit policy is one class in one place: a toy policy registered here (exit when
the squared max-softmax confidence reaches the threshold) is searched, exported as one graph
and as stages, and evaluated, and the exports take the cost model's exit on every sample."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from hapi_dse.cost.policies import (
    POLICY_REGISTRY,
    ColumnData,
    ExitPolicy,
    Ops,
    ThresholdPolicy,
    get_policy,
    policy_names,
    register_policy,
)

T = TypeVar("T")
TOY = "squared_confidence"


class SquaredConfidence(ThresholdPolicy):
    """Exit when the squared calibrated max-softmax confidence is at least the threshold."""

    name = TOY
    at_least = True

    def column_score(self, data: ColumnData, col: int) -> np.ndarray:
        return np.asarray(data.confidence[col], np.float64) ** 2

    def score(self, ops: Ops[T], z: T, classes: int) -> T:
        confidence = ops.reciprocal(ops.sum(ops.exp(z)))
        return ops.mul(confidence, confidence)


@pytest.fixture
def toy() -> Iterator[ExitPolicy]:
    register_policy(SquaredConfidence)
    try:
        yield get_policy(TOY)
    finally:
        del POLICY_REGISTRY[TOY]


def test_a_registered_policy_is_a_design_policy(toy: ExitPolicy) -> None:
    from hapi_dse.cost.design import Design, Exit
    from hapi_dse.errors import UsageError

    assert policy_names()[-1] == TOY and toy.uses_threshold
    design = Design((Exit(1, "linear", 0.25), Exit(4, "conv", 0.5)), TOY)
    assert Design.from_dict(json.loads(json.dumps(design.to_dict()))) == design
    assert Design.from_compact(design.compact(), TOY) == design
    assert design.policy_params == {} and toy.forcing == (-1.0, 2.0)
    with pytest.raises(UsageError, match=f"did you mean '{TOY}'"):
        Design((), TOY[:-1])
    with pytest.raises(ValueError, match="already registered"):
        register_policy(SquaredConfidence)


def _scores(stats: Any, exits: list[tuple[int, str]]) -> list[np.ndarray]:
    return [stats.confidence[:, stats.column(p, h)].astype(np.float64) ** 2 for p, h in exits]


def _cost_model_exits(stats: Any, exits: list[tuple[int, str]], thr: list[float]) -> np.ndarray:
    """The exit each sample takes, by hand from the statistics (independent of CostModel)."""
    fire = [s >= t for s, t in zip(_scores(stats, exits), thr, strict=True)]
    fire.append(np.ones(len(stats.labels), bool))
    return np.argmax(np.array(fire), axis=0)


def test_search_proposes_and_scores_it(
    toy: ExitPolicy, tiny_run: Path, run_cli: Any, tmp_path: Path, write_fake_table: Any
) -> None:
    from hapi_dse.run import RunDir
    from hapi_dse.testing.cli import search_args

    write_fake_table(tiny_run, tmp_path / "profiles", "fakehost")
    space = tmp_path / "toy.toml"
    space.write_text(
        f"[exits]\ncount = [1, 2]\n[thresholds]\nlevels = 9\n[policies.{TOY}]\n"
        "threshold = [0.2, 1.0]\n"
    )
    out = tmp_path / "out"
    args = search_args(tiny_run, tmp_path / "profiles", out, "--space", space, device="fakehost")
    res = run_cli(*args, "--trials", "40", "--seed", "0")
    assert res.exit_code == 0, res.stderr
    with open(out / "fakehost" / "trials.csv", newline="") as f:
        assert {r["policy"] for r in csv.DictReader(f)} == {TOY}
    chosen = json.loads((out / "fakehost" / "design.json").read_text())
    assert chosen["policy"] == TOY and chosen["exits"]
    # its predicted accuracy is the toy rule's, computed here by hand
    stats = RunDir(tiny_run).stats("val")
    exits = [(e["position"], e["head"]) for e in chosen["exits"]]
    taken = _cost_model_exits(stats, exits, [e["threshold"] for e in chosen["exits"]])
    cols = [stats.column(p, h) for p, h in exits] + [stats.k - 1]
    right = stats.prediction[np.arange(len(taken)), np.asarray(cols)[taken]] == stats.labels
    assert chosen["predicted_val"]["accuracy"] == pytest.approx(float(np.mean(right)))


def _robust_threshold(score: np.ndarray, quantile: float) -> float:
    """A threshold near ``quantile`` of ``score`` in a gap between samples of at least 1e-4
    of the score (float32 is good to ~1e-7): the graphs' float32 scores and the statistics'
    cannot fall on different sides of it."""
    values = np.unique(score)
    mids = (values[1:] + values[:-1]) / 2
    ok = np.flatnonzero(np.diff(values) >= 1e-4 * values[1:])
    target = np.quantile(score, quantile)
    best = ok[np.argmin(np.abs(mids[ok] - target))]
    return float(mids[best])


def test_exports_and_eval_take_the_cost_model_exits(
    toy: ExitPolicy,
    tiny_run: Path,
    run_cli: Any,
    tmp_path: Path,
    write_design: Any,
    write_fake_table: Any,
) -> None:
    import torch

    from hapi_dse.cost.costs import SegmentCosts
    from hapi_dse.cost.design import Design
    from hapi_dse.cost.model import simulate
    from hapi_dse.deploy.inputs import exit_temperatures, load_samples
    from hapi_dse.graphs.graph import build_stages, decide
    from hapi_dse.run import RunDir

    run = RunDir(tiny_run)
    stats = run.stats("test")
    exits = [(1, "linear"), (4, "conv")]
    thr = [_robust_threshold(s, q) for s, q in zip(_scores(stats, exits), (0.5, 0.3), strict=True)]
    result = tmp_path / "result"
    doc = [(p, h, t) for (p, h), t in zip(exits, thr, strict=True)]
    write_design(tiny_run, result / "host" / "design.json", doc, policy=TOY)
    design = Design.from_dict(json.loads((result / "host" / "design.json").read_text()))
    # the cost model, the statistics by hand and the numpy rule on the network's logits agree
    sim, _ = simulate(design, stats, SegmentCosts.zero(stats, run.num_blocks))
    assert np.array_equal(sim, _cost_model_exits(stats, exits, thr))
    assert set(sim.tolist()) == {0, 1, 2}  # every exit path is taken
    samples = load_samples(run, "test")
    with torch.no_grad():
        h, logits = torch.from_numpy(samples.x), []
        for stage in build_stages(run.load_model(), design, layout_anchor=True).eval():
            h, z = stage(h)
            logits.append(z.numpy())
    temps = exit_temperatures(design, run)
    assert np.array_equal(decide(TOY, 0, logits, thr, temps), sim)
    # max_softmax at the same thresholds takes other paths: the exports below can tell them apart
    assert not np.array_equal(decide("max_softmax", 0, logits, thr, temps), sim)

    profiles = tmp_path / "profiles"
    write_fake_table(tiny_run, profiles, "fakehost")
    for fmt, out in (("onnx", tmp_path / "model.onnx"), ("staged", tmp_path / "staged")):
        opts = ("--model", tiny_run, "--format", fmt, "--check-samples", "128")
        res = run_cli("export", result, "--out", out, *opts)
        assert res.exit_code == 0, res.stderr
        report = tmp_path / f"{fmt}.eval.json"
        opts = ("--model", tiny_run, "--device", "fakehost", "--profiles", profiles)
        res = run_cli("eval", out, *opts, "--out", report, "--warmup", "0", "--passes", "1")
        assert res.exit_code == 0, res.stderr
        rep = json.loads(report.read_text())
        assert rep["design"]["policy"] == TOY and rep["n"] == len(sim)
        assert rep["fidelity"]["exit_agreement"] == 1.0, fmt
        hist = np.bincount(sim, minlength=3).tolist()
        assert rep["measured"]["exit_histogram"] == rep["predicted"]["exit_histogram"] == hist
