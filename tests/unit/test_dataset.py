"""Parquet datasets: manifest contents, content hash, atomic replace, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adray.data import (
    DataError,
    FeatureMap,
    check_out_dir,
    read_dataset,
    require_finite,
    require_rows,
    write_dataset,
)
from adray.data.features import CategoricalFeature


def test_manifest_and_hash_are_stable(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1, 2, 3], "y": [0.0, 1.0, 0.0]})
    ds = write_dataset(tmp_path / "d", {"train": df, "test": df.head(1)}, source="unit", seed=7, meta={"k": 1})
    m = read_dataset(tmp_path / "d").manifest
    assert m["splits"]["train"]["rows"] == 3 and m["splits"]["test"]["rows"] == 1
    assert m["splits"]["train"]["schema"] == {"a": "int64", "y": "float64"}
    assert (m["seed"], m["source"], m["meta"]) == (7, "unit", {"k": 1})
    again = write_dataset(tmp_path / "d", {"train": df, "test": df.head(1)}, source="unit", seed=7)
    assert again.manifest["content_hash"] == ds.manifest["content_hash"]
    pd.testing.assert_frame_equal(read_dataset(tmp_path / "d").read("train"), df)


def test_empty_split_is_refused_and_old_dataset_kept(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1]})
    write_dataset(tmp_path / "d", {"train": df}, source="unit")
    with pytest.raises(DataError, match="split 'train' is empty"):
        write_dataset(tmp_path / "d", {"train": df.iloc[:0]}, source="unit")
    assert read_dataset(tmp_path / "d").manifest["splits"]["train"]["rows"] == 1


def test_missing_manifest_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="adray data make"):
        read_dataset(tmp_path)


def test_require_finite_names_column_and_row() -> None:
    df = pd.DataFrame({"x": [1.0, np.nan], "s": ["1", "abc"]})
    with pytest.raises(DataError, match=r"f.csv: column 'x' has 1 NaN.*row 1"):
        require_finite(df, ["x"], "f.csv")
    with pytest.raises(DataError, match=r"column 's' row 1: value 'abc' is not a number"):
        require_finite(df, ["s"], "f.csv")


def test_feature_map_arrays_and_errors() -> None:
    fm = FeatureMap((CategoricalFeature("c", 3),), ("n",), ("click",))
    assert FeatureMap.from_dict(fm.to_dict()) == fm
    arr = fm.arrays(pd.DataFrame({"c": [1, 5, -1], "n": [0.5, 1, 2], "click": [0, 1, 1]}), "t")
    assert arr["x_cat"].ravel().tolist() == [1, 0, 0]  # out of vocabulary -> 0
    assert arr["x_num"].dtype == np.float32 and arr["click"].tolist() == [0, 1, 1]
    with pytest.raises(DataError, match=r"label 'click' row 0: 2; expected 0 or 1"):
        fm.arrays(pd.DataFrame({"c": [1], "n": [0.5], "click": [2]}), "t")
    with pytest.raises(DataError, match=r"missing column\(s\) \['n'\]"):
        fm.arrays(pd.DataFrame({"c": [1], "click": [0]}), "t")


def test_feature_map_counts_out_of_vocabulary_ids_per_column() -> None:
    fm = FeatureMap((CategoricalFeature("c", 3), CategoricalFeature("d", 5)), (), ())
    ids = np.array([[1, 4], [5, -1], [-2, 7], [0, 2]])
    assert fm.out_of_vocab(ids) == {"c": 2, "d": 2}  # the ids arrays() and encode_records() map to 0
    assert fm.out_of_vocab(np.zeros((0, 2), np.int64)) == {"c": 0, "d": 0}


def test_only_a_dataset_or_an_empty_directory_is_replaced(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1]})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match=r"mine: a directory that is not a dataset \(no manifest.json\) and not empty"):
        write_dataset(tmp_path / "mine", {"train": df}, source="unit")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    write_dataset(tmp_path / "d", {"train": df}, source="unit")
    with pytest.raises(DataError, match=r"d: a dataset is already there; pass --overwrite"):
        check_out_dir(tmp_path / "d", overwrite=False)
    check_out_dir(tmp_path / "d", overwrite=True)
    check_out_dir(tmp_path / "new", overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "mine"]  # no temporary directory left


def test_require_rows_names_file_row_field_and_value() -> None:
    v = pd.Series([0.0, 1.0, 1.5, -7.0])
    with pytest.raises(DataError, match=r"^f.csv: row 2: field 'click': 1.5; expected 0 or 1 \(2 such row\(s\)\)$"):
        require_rows(np.isin(v, (0, 1)), v, "f.csv", "click", "0 or 1")
    with pytest.raises(DataError, match=r"^f.csv: line 4: field 'click'"):
        require_rows(np.isin(v, (0, 1)), v, "f.csv", "click", "0 or 1", row="line")
