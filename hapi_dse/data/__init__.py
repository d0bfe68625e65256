"""Datasets: built-in ones (Fashion-MNIST, digits), image folders and ``.npz`` files, with
fixed train/val/test splits read a batch at a time."""

from hapi_dse.data.datasets import DATASETS, Splits, find_data_dir, load_splits
from hapi_dse.data.idx import read_idx, write_idx
from hapi_dse.data.images import ImageSet

__all__ = [
    "DATASETS",
    "ImageSet",
    "Splits",
    "find_data_dir",
    "load_splits",
    "read_idx",
    "write_idx",
]
