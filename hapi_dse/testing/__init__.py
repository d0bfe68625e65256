"""Test support for hapi and for code built on it (as ``optuna.testing`` is for Optuna):
synthetic exit statistics, segment costs, run directories and profile tables that have the
shape of a trained network's trade-offs, built in milliseconds without torch or data files,
and the command lines of ``hapi search`` and ``hapi train`` that tests share.

>>> from hapi_dse.testing import synthetic_costs, synthetic_stats
>>> stats = synthetic_stats(n=100, num_blocks=4, heads=("linear", "conv"))
>>> stats.k, synthetic_costs(stats).block_latency_ms.shape
(9, (4,))
"""

from hapi_dse.testing.cli import quick_train_args, search_args, train_args
from hapi_dse.testing.synthetic import (
    SyntheticSetup,
    synthetic_costs,
    synthetic_stats,
    write_synthetic_run,
    write_synthetic_setup,
    write_synthetic_table,
)

__all__ = [
    "SyntheticSetup",
    "quick_train_args",
    "search_args",
    "synthetic_costs",
    "synthetic_stats",
    "train_args",
    "write_synthetic_run",
    "write_synthetic_setup",
    "write_synthetic_table",
]
