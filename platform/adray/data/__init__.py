"""Datasets as Parquet splits plus a manifest; the FeatureMap shared by data, model and serving;
the file reader (CSV or Parquet) every importer uses and the leak guard every importer runs."""

from adray.data.csvfile import parquet_columns, read_parquet, read_table, require_same_features
from adray.data.dataset import (
    DataError,
    Dataset,
    check_out_dir,
    read_dataset,
    read_manifest,
    require_columns,
    require_finite,
    require_rows,
    write_dataset,
)
from adray.data.features import FeatureMap
from adray.data.leakguard import GuardReport, leak_guard

__all__ = [
    "DataError",
    "Dataset",
    "FeatureMap",
    "GuardReport",
    "check_out_dir",
    "leak_guard",
    "parquet_columns",
    "read_dataset",
    "read_manifest",
    "read_parquet",
    "read_table",
    "require_columns",
    "require_finite",
    "require_rows",
    "require_same_features",
    "write_dataset",
]
