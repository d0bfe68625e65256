"""``--pick``: which design on the feasible Pareto front a search chooses (DESIGN 2.3).

The rules are the objective metrics of :data:`~hapi_dse.cost.METRIC_TABLE` (the best value of
one metric, ties broken by the objectives in order), ``knee`` and ``iso_accuracy[:D]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hapi_dse.cost import METRIC_TABLE, Objective, metric, parse_objectives
from hapi_dse.errors import SettingError, unknown_name

if TYPE_CHECKING:
    from hapi_dse.search.records import TrialRecord

PICK_RULES = (*(m.name for m in METRIC_TABLE if m.objective), "knee", "iso_accuracy")
#: ``--pick iso_accuracy[:D]``: the largest drop from the plain backbone's val accuracy, pp
ISO_ACCURACY_DROP_PP = 0.5


def parse_pick(rule: str) -> tuple[str, float | None]:
    """``--pick RULE``: the rule name and, for ``iso_accuracy[:D]``, the drop D in pp."""
    name, sep, arg = rule.partition(":")
    if name not in PICK_RULES:
        raise SettingError("pick", f": {unknown_name('rule', name, PICK_RULES)}")
    if name != "iso_accuracy":
        if sep:
            raise SettingError("pick", f"{rule}: only iso_accuracy takes a value (iso_accuracy:D)")
        return name, None
    if not sep:
        return name, ISO_ACCURACY_DROP_PP
    try:
        drop = float(arg)
    except ValueError:
        drop = float("nan")
    if not (math.isfinite(drop) and 0 <= drop <= 100):
        raise SettingError(
            "pick",
            f"{rule}: D must be a number of percentage points in 0..100, e.g. iso_accuracy:0.5",
        )
    return name, drop


def pick(
    front: Sequence[TrialRecord],
    objectives: Sequence[Objective],
    rule: str,
    backbone: dict[str, float] | None = None,
) -> TrialRecord | None:
    """The chosen design among the feasible front: best ``rule`` metric, ties broken by the
    objectives in order; ``knee``: nearest to the ideal point, objectives scaled to 0..1;
    ``iso_accuracy:D``: the fastest (mean latency) whose val accuracy is at most D pp below
    the plain ``backbone``'s, else the most accurate."""
    if not front:
        return None
    name, drop = parse_pick(rule)
    if name == "iso_accuracy":
        assert backbone is not None and drop is not None
        floor = backbone["accuracy"] - drop / 100 - 1e-12
        near = [r for r in front if r.metrics is not None and r.metrics["accuracy"] >= floor]
        if not near:
            return pick(front, objectives, "accuracy")
        return pick(near, objectives, "latency")
    if rule == "knee":
        pts = np.array([r.objective_vector(objectives) for r in front])
        span = np.ptp(pts, axis=0)
        span[span == 0] = 1.0
        d = np.linalg.norm((pts - pts.min(axis=0)) / span, axis=1)
        return front[int(np.argmin(d))]
    obj = parse_objectives(rule)[0]

    def key(r: TrialRecord) -> tuple[float, ...]:
        assert r.metrics is not None
        first = -r.metrics[obj.metric] if obj.maximize else r.metrics[obj.metric]
        return (first, *r.objective_vector(objectives), r.number)

    return min(front, key=key)


#: how many percentage points more a design may lose to the plain backbone on test than it
#: did on val before it is flagged: twice the largest val/test spread of the bundled
#: example's Pareto front (5,000 val and 10,000 test images)
SHORTFALL_MARGIN_PP = 1.0


@dataclass(frozen=True)
class Shortfall:
    """How far a design's accuracy falls below the plain backbone's, in percentage points,
    on val (what the search saw) and on test (negative: above the backbone)."""

    val_pp: float
    test_pp: float

    @property
    def flagged(self) -> bool:
        """The test split loses clearly more to the backbone than val promised: a design
        picked on a small or unlucky val split. Losing what val showed is the trade the
        search made, not a surprise."""
        return self.test_pp > 0 and self.test_pp - max(self.val_pp, 0.0) > SHORTFALL_MARGIN_PP


def shortfall(
    val: Mapping[str, float] | None,
    test: Mapping[str, float] | None,
    backbone: Mapping[str, Mapping[str, float]],
) -> Shortfall | None:
    """A design's :class:`Shortfall` from its val and test metrics and the backbone's
    (``backbone["val"]``, ``backbone["test"]``); ``None`` when one is unknown."""
    if val is None or test is None or "val" not in backbone or "test" not in backbone:
        return None
    return Shortfall(
        100.0 * (backbone["val"]["accuracy"] - val["accuracy"]),
        100.0 * (backbone["test"]["accuracy"] - test["accuracy"]),
    )


def check_pick(rule: str | None) -> None:
    """Refuse a malformed ``--pick`` before any work."""
    if rule is not None:
        parse_pick(rule)


def default_rule(objectives: Sequence[Objective]) -> str:
    """Without ``--pick``: the best value of the first objective."""
    return metric(objectives[0].metric).name


def rule_words(rule: str) -> str:
    name, drop = parse_pick(rule)
    if name == "iso_accuracy":
        return f"fastest within {drop:g} pp of the plain backbone's val accuracy"
    return f"best {name}"
