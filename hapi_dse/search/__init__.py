"""Design-space exploration: Optuna studies over search spaces, scored by the cost model.

No torch here (the ``gp`` sampler imports it through Optuna, only when chosen).
"""

from hapi_dse.search.config import DEFAULT_TRIALS, SearchConfig
from hapi_dse.search.console import console_report
from hapi_dse.search.records import DeviceResult, TrialRecord
from hapi_dse.search.runner import run_search
from hapi_dse.search.sampling import SAMPLERS
from hapi_dse.search.space import BoundSpace, SearchSpace, load_space, parse_space

__all__ = [
    "DEFAULT_TRIALS",
    "SAMPLERS",
    "BoundSpace",
    "DeviceResult",
    "SearchConfig",
    "SearchSpace",
    "TrialRecord",
    "console_report",
    "load_space",
    "parse_space",
    "run_search",
]
