"""DRL-PUT logged data: the schema, the behaviour policies' propensities, and bad logs refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    assert ds.splits == ["train", "val", "test"] and ds.meta["num_actions"] == 125
    train = read_split(CFG, logs, "train")
    assert list(train.columns) == list(C.LOG_COLUMNS) and len(train) == 1600
    val, test = read_split(CFG, logs, "val"), read_split(CFG, logs, "test")
    assert len(val) == len(test) == 200
    ids = [set(x[C.REQUEST_ID]) for x in (train, val, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])  # disjoint requests
    assert not np.array_equal(val[list(C.STATE)].to_numpy(), test[list(C.STATE)].to_numpy())  # own streams
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
    df = read_dataset(logs).read("train")
    df[field] = df[field].astype(np.float64) if isinstance(value, float) else df[field]
    df.loc[3, field] = value
    bad = tmp_path / "bad.parquet"
    df.to_parquet(bad)
    with pytest.raises(DataError, match=message) as err:
        read_logs(bad, 125)
    assert str(bad) in str(err.value)


def test_missing_column_names_file_and_field(logs: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    read_dataset(logs).read("train").drop(columns=[C.PROPENSITY]).to_parquet(bad)
    with pytest.raises(DataError, match=r"bad.parquet: missing column\(s\) \['propensity'\]"):
        read_logs(bad, 125)


def test_logs_of_another_action_space_are_refused(logs: Path) -> None:
    with pytest.raises(DataError, match=r"another action config \(fields \['n_values'\]"):
        read_split(CFG.override({"action.n_values": 4}), logs, "train")



def test_two_split_datasets_are_refused_by_name(logs: Path, tmp_path: Path) -> None:
    """A dataset written before the test split existed: refused with what to do, not half-used."""
    from adray.data import write_dataset

    ds = read_dataset(logs)
    write_dataset(tmp_path / "old", {s: ds.read(s) for s in ("train", "val")}, source="old", meta=ds.meta)
    with pytest.raises(DataError, match=r"missing \['test'\].*regenerate it with `adray data make drlput`"):
        read_split(CFG, tmp_path / "old", "train")


def test_decision_log_import_holds_out_the_latest_requests(logs: Path, tmp_path: Path) -> None:
    from workloads.drlput.data import import_decision_log

    df = read_dataset(logs).read("train").iloc[:100]
    df[C.REQUEST_ID] = [f"feed-{i:06d}" for i in range(100)][::-1]  # ids unordered in the file
    df.to_parquet(tmp_path / "log.parquet")
    import_decision_log([tmp_path / "log.parquet"], tmp_path / "ds", CFG)
    ds = read_dataset(tmp_path / "ds")
    assert ds.splits == ["train", "val", "test"]
    parts = [ds.read(s)[C.REQUEST_ID].tolist() for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [80, 10, 10]
    assert parts[0] + parts[1] + parts[2] == sorted(df[C.REQUEST_ID])  # train < val < test by request id
    df.iloc[:2].to_parquet(tmp_path / "tiny.parquet")
    with pytest.raises(DataError, match="2 row.*need at least 3"):
        import_decision_log([tmp_path / "tiny.parquet"], tmp_path / "tiny", CFG)


def test_the_streamed_block_check_applies_the_same_rules_as_read_logs() -> None:
    from workloads.drlput.logs import check_block

    check = check_block(125)
    ok = {C.ACTION: np.array([1, 2]), C.PROPENSITY: np.array([0.5, 1.0])}
    assert check(ok) is ok
    with pytest.raises(DataError, match=r"a block of 2 rows: field 'action' row 1: value 200 is not an action of A"):
        check({C.ACTION: np.array([1, 200]), C.PROPENSITY: np.array([0.5, 0.5])})
    with pytest.raises(DataError, match=r"field 'propensity' row 0: value 0.0 is not a propensity"):
        check({C.ACTION: np.array([1, 2]), C.PROPENSITY: np.array([0.0, 0.5])})
