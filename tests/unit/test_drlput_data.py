"""DRL-PUT logged data: the schema, the behaviour policies' propensities, and bad logs refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adray.data import DataError, read_dataset
from workloads.drlput import columns as C
from workloads.drlput.actions import ActionSpace, behaviour_probs
from workloads.drlput.config import PARAMS, DRLPUTConfig
from workloads.drlput.data import make_data, read_logs, read_split

CFG = DRLPUTConfig().override({"behaviour.n_requests": 2000})


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("drlput") / "data"
    make_data(CFG, out)
    return out


def test_schema_and_uniform_propensities(logs: Path) -> None:
    ds = read_dataset(logs)
    assert ds.splits == ["train", "val"] and ds.meta["num_actions"] == 125
    train = read_split(CFG, logs, "train")
    assert list(train.columns) == list(C.LOG_COLUMNS) and len(train) == 1600
    assert len(read_split(CFG, logs, "val")) == 400
    np.testing.assert_allclose(train[C.PROPENSITY], 1 / 125)
    assert (train[C.POLICY_ID] == "uniform").all() and train[C.MODEL_VERSIONS].iloc[0].startswith("ctr=")
    space = ActionSpace(CFG.action)
    np.testing.assert_allclose(train[list(PARAMS)].to_numpy(), space.values[train[C.ACTION]])
    assert train[C.ACTION].nunique() > 100  # uniform: (nearly) every action is logged
    assert train[C.REQUEST_ID].is_unique


def test_gaussian_behaviour_logs_its_propensities(tmp_path: Path) -> None:
    cfg = CFG.override({"behaviour.policy": "gaussian", "behaviour.n_requests": 3000})
    make_data(cfg, tmp_path / "g")
    train = read_split(cfg, tmp_path / "g", "train")
    space = ActionSpace(cfg.action)
    probs = behaviour_probs(space, "gaussian", cfg.behaviour.sigma)
    np.testing.assert_allclose(train[C.PROPENSITY], probs[train[C.ACTION]])
    prod = space.nearest(cfg.action.production)
    assert (train[C.ACTION] == prod).mean() == pytest.approx(probs[prod], abs=0.02)
    assert (train[C.POLICY_ID] == "gaussian").all()


def test_make_data_is_seeded(tmp_path: Path) -> None:
    cfg = CFG.override({"behaviour.n_requests": 300})
    make_data(cfg, tmp_path / "a")
    make_data(cfg, tmp_path / "b")
    assert read_dataset(tmp_path / "a").manifest["content_hash"] == read_dataset(tmp_path / "b").manifest["content_hash"]


@pytest.mark.parametrize(("field", "value", "message"), [
    (C.ACTION, 125, r"field 'action' row 3: value 125 is not an action of A \(expected an integer in \[0, 125\)"),
    (C.ACTION, -1, "field 'action' row 3: value -1 is not an action"),
    (C.PROPENSITY, 0.0, r"field 'propensity' row 3: value 0.0 is not a propensity \(expected 0 < p <= 1"),
    (C.PROPENSITY, 1.5, "field 'propensity' row 3: value 1.5 is not a propensity"),
    ("hour", 24, r"field 'hour' row 3: value 24 outside \[0, 24\)"),
    (C.REVENUE, np.nan, "column 'revenue' has 1 NaN/inf"),
])
def test_bad_log_values_name_file_and_field(logs: Path, tmp_path: Path, field: str, value: float, message: str) -> None:
    df = pd.read_parquet(logs / "train.parquet")
    df[field] = df[field].astype(np.float64) if isinstance(value, float) else df[field]
    df.loc[3, field] = value
    bad = tmp_path / "bad.parquet"
    df.to_parquet(bad)
    with pytest.raises(DataError, match=message) as err:
        read_logs(bad, 125)
    assert str(bad) in str(err.value)


def test_missing_column_names_file_and_field(logs: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    pd.read_parquet(logs / "train.parquet").drop(columns=[C.PROPENSITY]).to_parquet(bad)
    with pytest.raises(DataError, match=r"bad.parquet: missing column\(s\) \['propensity'\]"):
        read_logs(bad, 125)


def test_logs_of_another_action_space_are_refused(logs: Path) -> None:
    with pytest.raises(DataError, match=r"another action config \(fields \['n_values'\]"):
        read_split(CFG.override({"action.n_values": 4}), logs, "train")

