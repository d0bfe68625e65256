"""Training: backbone, then IC-only exit heads, calibration and cached exit statistics."""

from hapi_dse.training.trainer import TrainConfig, summary_table, train

__all__ = ["TrainConfig", "summary_table", "train"]
