"""The cost model: predicted accuracy, latency, energy and size of an early-exit design.

Computed from the exit statistics (``exits_*.npz``) and a device's profile table alone,
vectorised with numpy; no torch. ``predict`` and ``simulate`` take a :class:`Design` or the
dict of a ``design.json``.
"""

from hapi_dse.cost.costs import SegmentCosts
from hapi_dse.cost.design import Design, Exit
from hapi_dse.cost.metrics import (
    METRIC_TABLE,
    METRICS,
    Metric,
    find_metric,
    metric,
    pareto_front,
    pareto_mask,
)
from hapi_dse.cost.model import CostModel, predict, simulate
from hapi_dse.cost.policies import (
    POLICY_REGISTRY,
    ExitPolicy,
    ThresholdPolicy,
    get_policy,
    policy_names,
    register_policy,
)
from hapi_dse.cost.slo import (
    SLO,
    Objective,
    default_objectives,
    parse_objectives,
    parse_slo,
    parse_slos,
)

__all__ = [
    "METRICS",
    "METRIC_TABLE",
    "POLICY_REGISTRY",
    "SLO",
    "CostModel",
    "Design",
    "Exit",
    "ExitPolicy",
    "Metric",
    "Objective",
    "SegmentCosts",
    "ThresholdPolicy",
    "default_objectives",
    "find_metric",
    "get_policy",
    "metric",
    "pareto_front",
    "pareto_mask",
    "parse_objectives",
    "parse_slo",
    "parse_slos",
    "policy_names",
    "predict",
    "register_policy",
    "simulate",
]
