"""Datasets as Parquet part files plus a manifest, on the storage URI (local or ``s3://``); the
streaming writer; the FeatureMap shared by data, model and serving; the file reader (CSV or
Parquet) every importer uses and the leak guard every importer runs."""

from adray.data.csvfile import parquet_columns, read_parquet, read_table, require_same_features
from adray.data.dataset import (
    DataError,
    Dataset,
    check_out_dir,
    dataset_exists,
    dataset_uri,
    is_remote,
    read_dataset,
    read_manifest,
    require_columns,
    require_finite,
    require_rows,
)
from adray.data.features import FeatureMap
from adray.data.leakguard import GuardReport, leak_guard
from adray.data.writer import PART_ROWS, ROW_GROUP_ROWS, DatasetWriter, write_dataset

__all__ = [
    "PART_ROWS",
    "ROW_GROUP_ROWS",
    "DataError",
    "Dataset",
    "DatasetWriter",
    "FeatureMap",
    "GuardReport",
    "check_out_dir",
    "dataset_exists",
    "dataset_uri",
    "is_remote",
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
