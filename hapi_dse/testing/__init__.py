"""Test support for hapi and for code built on it (as ``optuna.testing`` is for Optuna):
synthetic exit statistics, segment costs, run directories and profile tables that have the
shape of a trained network's trade-offs, built in milliseconds without torch or data files.

>>> from hapi_dse.testing import synthetic_costs, synthetic_stats
>>> stats = synthetic_stats(n=100, num_blocks=4, heads=("linear", "conv"))
>>> stats.k, synthetic_costs(stats).block_latency_ms.shape
(9, (4,))
"""

from hapi_dse.testing.synthetic import (
    synthetic_costs,
    synthetic_stats,
    write_synthetic_run,
    write_synthetic_table,
)

__all__ = ["synthetic_costs", "synthetic_stats", "write_synthetic_run", "write_synthetic_table"]
