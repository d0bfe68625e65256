"""Datasets: the IDX reader and fixed train/val/test splits."""

from hapi_dse.data.datasets import DATASETS, Splits, find_data_dir, load_splits
from hapi_dse.data.idx import read_idx, write_idx

__all__ = ["DATASETS", "Splits", "find_data_dir", "load_splits", "read_idx", "write_idx"]
