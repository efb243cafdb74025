"""Datasets as Parquet splits plus a manifest; the FeatureMap shared by data, model and serving;
the CSV reader every importer uses and the leak guard every importer runs."""

from adray.data.csvfile import read_table, require_same_features
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
from adray.data.leakguard import GuardReport, leak_guard

__all__ = [
    "DataError",
    "Dataset",
    "FeatureMap",
    "GuardReport",
    "leak_guard",
    "read_dataset",
    "read_manifest",
    "read_table",
    "require_columns",
    "require_finite",
    "require_same_features",
    "write_dataset",
]
