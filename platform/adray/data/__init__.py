"""Datasets as Parquet splits plus a manifest; the FeatureMap shared by data, model and serving."""

from adray.data.dataset import (
    DataError,
    Dataset,
    read_dataset,
    read_manifest,
    require_columns,
    require_finite,
    write_dataset,
)
from adray.data.features import FeatureMap

__all__ = [
    "DataError",
    "Dataset",
    "FeatureMap",
    "read_dataset",
    "read_manifest",
    "require_columns",
    "require_finite",
    "write_dataset",
]
