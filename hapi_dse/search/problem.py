"""One device's search problem: what a trial scores, built from a run and a device's table.

:class:`Problem` bundles what a trial needs (space, cost model, SLOs, objectives), is what a
``--jobs`` worker receives, and says what a study must agree on to be resumed or joined
(:meth:`Problem.fingerprint`). :func:`build_problem` loads the device's table and checks the
space, objectives and SLOs against it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hapi_dse.cost import SLO, CostModel, Design, Objective, SegmentCosts, default_objectives
from hapi_dse.errors import UsageError
from hapi_dse.search.sampling import make_sampler
from hapi_dse.search.space import BoundSpace, SearchSpace, load_space

if TYPE_CHECKING:
    from hapi_dse.exit_stats import ExitStats
    from hapi_dse.run import RunDir
    from hapi_dse.search.config import SearchConfig


class Evaluator:
    """The cost model with a cache by design (samplers propose the same design often)."""

    def __init__(self, model: CostModel) -> None:
        self.model = model
        self.cache: dict[tuple[Any, ...], dict[str, float]] = {}
        self.misses = 0

    def __call__(self, design: Design) -> dict[str, float]:
        m = self.cache.get(design.key)
        if m is None:
            m = self.model.evaluate(design)
            self.cache[design.key] = m
            self.misses += 1
        return m


@dataclass
class Problem:
    """One device's search: inputs, space, scoring."""

    device: str
    model_id: str
    space: BoundSpace
    val: Evaluator
    test: Evaluator
    objectives: list[Objective]
    slos: list[SLO]
    costs: SegmentCosts
    inputs: dict[str, Path] = field(default_factory=dict)
    table_source: str = ""
    table_sidecar: dict[str, Any] = field(default_factory=dict)
    table_path: Path | None = None

    #: called after each trial this process runs with the study, the trial's objective values
    #: and whether it meets every SLO (progress, stopping); set by run_study. Not an Optuna
    #: callback: optimize() deep-copies the trial for those (~1 ms each).
    after_trial: Callable[[Any, list[float], bool], None] | None = None

    def objective(self, trial: Any) -> list[float]:
        """Score the design ``trial`` suggests on val; record each SLO as a constraint."""
        design = self.space.suggest(trial)
        # what the parameters stand for, readable where studies are browsed (optuna-dashboard)
        trial.set_user_attr("design", readable(design))
        metrics = self.val(design)
        feasible = True
        for slo in self.slos:
            violation = slo.violation(metrics)
            trial.set_constraint(slo.name, violation)
            feasible = feasible and violation <= 0
        values = [metrics[o.metric] for o in self.objectives]
        if self.after_trial is not None:
            self.after_trial(trial.study, values, feasible)
        return values

    def backbone(self) -> dict[str, float]:
        """The plain backbone (no exit) scored on val like a design; not through the cache,
        which says which designs the search has scored (:meth:`seen`)."""
        return self.val.model.evaluate(Design(()))

    def seen(self, params: Any) -> bool:
        """Whether the design these trial parameters decode to has been scored."""
        return self.space.decode(params).key in self.val.cache

    def sampler(self, name: str, seed: int | None, population: int | None) -> Any:
        return make_sampler(name, seed, population, seen=self.seen)

    def fingerprint(self) -> dict[str, Any]:
        """What a study must agree on to be resumed or joined."""
        return {
            "model_id": self.model_id,
            "device": self.device,
            "space": self.space.space.name,
            "positions": list(self.space.positions),
            "heads": list(self.space.heads),
            "objectives": [o.metric for o in self.objectives],
            "slos": [s.describe() for s in self.slos],
        }


def readable(design: Design) -> str:
    """``"max_softmax 2:conv@0.91;7:linear@0.85"``, ``"patience 3 2:conv;7:linear"``, or
    ``"backbone"`` for no exit."""
    if not design.exits:
        return "backbone"
    policy = " ".join([design.policy, *map(str, design.policy_params.values())])
    return f"{policy} {design.compact(digits=3)}"


def make_problem(
    val: ExitStats,
    costs: SegmentCosts,
    space: SearchSpace,
    *,
    test: ExitStats | None = None,
    test_costs: SegmentCosts | None = None,
    objectives: Sequence[Objective] | None = None,
    slos: Sequence[SLO] = (),
    device: str = "device",
    model_id: str = "",
) -> Problem:
    """A search problem from exit statistics and a device's segment costs (no files).

    The front is re-scored on ``test`` with ``test_costs`` (defaults: ``val``, ``costs``);
    ``objectives`` default to accuracy and latency, plus energy when ``costs`` has it. An
    objective or SLO on energy without energy figures is refused. A relative SLO
    (``latency=0.6x``) is resolved here against the plain backbone's predicted val metrics
    with ``costs``, the figures the search reports for the backbone.
    """
    bound = space.bind(val, model_id)
    objs = list(objectives) if objectives is not None else default_objectives(costs.has_energy)
    if not costs.has_energy:
        for name in [o.metric for o in objs] + [s.metric for s in slos]:
            if name == "energy_mj":
                of = f" of {model_id}" if model_id else ""
                raise UsageError(
                    f"the {device} table{of} has no energy figures, so energy "
                    "can be neither an objective nor an SLO; profile with an energy meter "
                    "or a device spec"
                )
    model = CostModel(val, costs)
    for policy in bound.space.policies:
        model.prepare(policy, bound.space.grid(policy))
    if any(not s.resolved for s in slos):  # latency=0.6x: this device's backbone, on val
        backbone = model.evaluate(Design(()))
        slos = [s.resolve(backbone) for s in slos]
    return Problem(
        device=device,
        model_id=model_id,
        space=bound,
        val=Evaluator(model),
        test=Evaluator(CostModel(test if test is not None else val, test_costs or costs)),
        objectives=objs,
        slos=list(slos),
        costs=costs,
        inputs={"space": bound.space.path} if bound.space.path is not None else {},
        table_source=str(costs.source),
    )


def build_problem(
    device: str, run: RunDir, val: ExitStats, test: ExitStats, cfg: SearchConfig
) -> Problem:
    """Load the device's table for the run and make its problem (:func:`make_problem`),
    recording the files it read as the search's inputs."""
    from hapi_dse.profiling.table import load_table

    table = load_table(device, run.model_id, cfg.profiles)
    problem = make_problem(
        val,
        SegmentCosts.from_table(table, val),
        load_space(cfg.space),
        test=test,
        test_costs=SegmentCosts.from_table(table, test),
        objectives=cfg.objectives,
        slos=cfg.slos,
        device=device,
        model_id=run.model_id,
    )
    table_path = Path(table.path) if getattr(table, "path", None) else None
    inputs: dict[str, Path] = {
        "exits_val": run.path / "exits_val.npz",
        "exits_test": run.path / "exits_test.npz",
    }
    if table_path is not None and table_path.is_file():
        inputs["table"] = table_path
        if table_path.with_suffix(".json").is_file():
            inputs["table_sidecar"] = table_path.with_suffix(".json")
    problem.inputs = inputs | problem.inputs  # the space file last, as before
    problem.table_sidecar = dict(table.sidecar)
    problem.table_path = table_path
    return problem


__all__ = ["Evaluator", "Problem", "build_problem", "make_problem"]
