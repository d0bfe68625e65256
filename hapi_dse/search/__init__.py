"""Design-space exploration: Optuna studies over search spaces, scored by the cost model.

No torch here (the ``gp`` sampler imports it through Optuna, only when chosen).

Calling this package is calling :func:`hapi_dse.api.search`: ``import hapi_dse as hapi;
hapi.search(...)`` finds this package once it is imported (Python sets the package's
attribute ``search`` to it, whatever was there), so the package must do what the API's
``search`` does.
"""

import sys
from types import ModuleType
from typing import Any

from hapi_dse.search.config import SearchConfig
from hapi_dse.search.console import console_report
from hapi_dse.search.records import DeviceResult, TrialRecord
from hapi_dse.search.runner import run_search
from hapi_dse.search.sampling import SAMPLERS
from hapi_dse.search.space import BoundSpace, SearchSpace, load_space, parse_space

__all__ = [
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


class _Package(ModuleType):
    """This package, callable as :func:`hapi_dse.api.search` (with its signature)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from hapi_dse.api import search

        return search(*args, **kwargs)

    @property
    def __signature__(self) -> Any:
        import inspect

        from hapi_dse.api import search

        return inspect.signature(search)


sys.modules[__name__].__class__ = _Package
