"""The decision-log importers stream (no Ray): ``crossdqn-log`` and ``drlput-log`` over several
files and several row groups give the dataset a whole-frame computation gives (references built
here from the whole files), a bad row deep in the input is named by its file and its row in that
file, and the external sort behind ``drlput-log`` is a stable sort."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adray.data import DataError, read_dataset, write_dataset
from adray.data.extsort import sorted_frames
from serve_apps.feed_log import log_schema
from workloads.crossdqn import data as cdata
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.outcomes import fill_outcomes, present_counts
from workloads.crossdqn.sim import FeedSim, action_bits, make_requests, obs_layout
from workloads.drlput import columns as C
from workloads.drlput import data as ddata
from workloads.drlput.actions import ActionSpace, behaviour_probs
from workloads.drlput.config import DRLPUTConfig
from workloads.drlput.policy import UtilityPolicy

LOG_SCHEMA_ = log_schema(UtilityPolicy)

# ----------------------------------------------------------------------------- crossdqn-log

CCFG = CrossDQNConfig(seed=4)
K = CCFG.sim.slots
JOINED = ("r_ad", "r_fee", "r_ex", "orders")


def _crossdqn_log(path: Path, n: int, seed: int, row_group: int = 40) -> None:
    """A graph-like log: fallbacks, missing observations, outcomes joined in most rows (null in
    some), and screens with fewer than K items (dropped when their outcome must be simulated)."""
    rng = np.random.default_rng(seed)
    obs = FeedSim(CCFG.sim, make_requests(CCFG.sim, n, seed)).observe()
    lo = obs_layout(CCFG.sim)
    ads_at = lo["profile"] + lo["hist_len"] * lo["item_dim"]
    short = rng.random(n) < 0.1
    for j in range(K):  # no ad and at most 2 organic items: fewer than K
        obs[short, ads_at + j * lo["feat"] + lo["feat"] - 1] = 0.0
        if j >= 2:
            obs[short, ads_at + (K + j) * lo["feat"] + lo["feat"] - 1] = 0.0
    fallback, no_obs, null_out = rng.random(n) < 0.1, rng.random(n) < 0.05, rng.random(n) < 0.3
    table = pa.table({
        "alloc_obs": pa.array([None if no_obs[i] else obs[i].tolist() for i in range(n)], pa.list_(pa.float32())),
        "alloc_action": pa.array(np.where(fallback, -1, rng.integers(0, CCFG.num_actions, n)), pa.int32()),
        "alloc_propensity": pa.array(rng.uniform(0.05, 1.0, n)),
        "alloc_fallback": pa.array(fallback),
        "model_versions": pa.array([json.dumps({"allocation": f"crossdqn@v{seed % 3}"})] * n),
        "r_ad": pa.array([None if null_out[i] else float(v) for i, v in enumerate(rng.random(n))], pa.float64()),
        "r_fee": pa.array(rng.random(n)), "r_ex": pa.array(rng.random(n) * 2),
        "orders": pa.array(rng.integers(0, 3, n).astype(np.float64)),
    })
    pq.write_table(table, path, row_group_size=row_group)


def _crossdqn_reference(files: list[Path], block_rows: int | None) -> pd.DataFrame:
    """What the import must give, from the whole files at once: simulated outcomes in one
    ``fill_outcomes`` call seeded ``cfg.seed`` (``block_rows`` None: the whole-frame importer), or one
    call per ``block_rows`` kept rows seeded ``outcome_seed(cfg.seed, block)``."""
    t = pa.concat_tables([pq.read_table(f) for f in files])
    obs_list = t["alloc_obs"].to_pylist()
    fallback = np.array(t["alloc_fallback"].to_pylist())
    keep = np.array([not fallback[i] and obs_list[i] is not None for i in range(len(t))])
    obs = np.array([o for o, k in zip(obs_list, keep, strict=True) if k], np.float32)
    actions = np.array(t["alloc_action"].to_pylist())[keep].astype(np.int64)
    props = np.array(t["alloc_propensity"].to_pylist())[keep]
    out = {c: np.array(t[c].to_pylist(), dtype=np.float64)[keep] for c in JOINED}
    joined = ~np.isnan(np.stack([out[c] for c in JOINED])).any(0)
    ads, orgs = present_counts(obs, CCFG.sim)
    ok = joined | (ads + orgs >= K)
    obs, actions, props, joined = obs[ok], actions[ok], props[ok], joined[ok]
    out = {c: v[ok] for c, v in out.items()}
    n = len(obs)
    shown = action_bits(K)[actions].sum(1)
    step = block_rows or n
    for b, lo in enumerate(range(0, n, step)):
        idx = np.arange(lo, min(n, lo + step))
        fill = idx[~joined[idx]]
        seed = CCFG.seed if block_rows is None else cdata.outcome_seed(CCFG.seed, b)
        sim = fill_outcomes(obs[fill], actions[fill], CCFG.sim, seed=seed)
        for c in JOINED:
            out[c][fill] = sim[c]
        shown[fill] = sim["ads"]
    return pd.DataFrame({
        "eps_id": np.arange(n), "t": 0, "actions": actions,
        "rewards": (out["r_ad"] + out["r_fee"] + CCFG.sim.eta * out["r_ex"]).astype(np.float32),
        **{c: out[c].astype(np.float32) for c in ("r_ad", "r_fee", "r_ex")}, "orders": out["orders"].astype(np.int64),
        "pae": (shown / K).astype(np.float32), "action_prob": props.astype(np.float32),
        "joined": joined, "obs": list(obs),
    })


@pytest.fixture(scope="module")
def crossdqn_logs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("crossdqn-logs")
    files = [d / f"log{i}.parquet" for i in range(3)]
    for i, (f, n) in enumerate(zip(files, (150, 230, 97), strict=True)):
        _crossdqn_log(f, n, seed=20 + i)
    return files


@pytest.mark.parametrize("block_rows", [None, 64])
def test_crossdqn_streamed_import_is_the_whole_frame_result(crossdqn_logs: list[Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch, block_rows: int | None,
                                                            ) -> None:
    if block_rows:  # blocks of 64 kept rows: they straddle row groups and files
        monkeypatch.setattr(cdata, "BLOCK_ROWS", block_rows)
    cdata.import_decision_log(crossdqn_logs, tmp_path / "ds", CCFG, simulate_outcomes=True)
    ref = _crossdqn_reference(crossdqn_logs, block_rows)
    ds = read_dataset(tmp_path / "ds")
    df = ds.read("train")
    assert len(df) == len(ref) > 3 * 64 and (~ref.joined).sum() > 50
    for c in ("eps_id", "t", "actions", "rewards", "r_ad", "r_fee", "r_ex", "orders", "pae", "action_prob"):
        np.testing.assert_array_equal(df[c].to_numpy(), ref[c].to_numpy(), err_msg=c)
    np.testing.assert_array_equal(np.stack(df.obs.to_numpy()), np.stack(ref.obs.to_numpy()))
    np.testing.assert_array_equal(np.stack(df.new_obs.to_numpy()), np.stack(ref.obs.to_numpy()))
    assert df.terminateds.all() and not df.truncateds.any()
    m = ds.meta
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in crossdqn_logs)
    left_out = m["left_out"]
    assert sum(left_out.values()) + len(df) == rows and min(left_out.values()) > 0
    assert m["outcomes"] == {"joined": int(ref.joined.sum()), "simulated": int((~ref.joined).sum())}
    assert m["filled_in"]["outcomes"]["rows"] == int((~ref.joined).sum())
    assert m["decided_by"] == ["crossdqn@v0", "crossdqn@v1", "crossdqn@v2"]
    assert m["log_pae"] == pytest.approx(float(ref.pae.astype(np.float64).mean()), rel=1e-6)


def test_crossdqn_import_does_not_depend_on_how_the_log_is_cut(crossdqn_logs: list[Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The same rows in one file of other row groups: the same dataset (seeds follow the dataset's
    blocks, not the input's)."""
    monkeypatch.setattr(cdata, "BLOCK_ROWS", 64)
    one = tmp_path / "one.parquet"
    pq.write_table(pa.concat_tables([pq.read_table(f) for f in crossdqn_logs]), one, row_group_size=33)
    cdata.import_decision_log(crossdqn_logs, tmp_path / "a", CCFG, simulate_outcomes=True)
    cdata.import_decision_log([one], tmp_path / "b", CCFG, simulate_outcomes=True)
    a, b = read_dataset(tmp_path / "a"), read_dataset(tmp_path / "b")
    assert a.manifest["content_hash"] == b.manifest["content_hash"]
    assert cdata.outcome_seed(7, 0) == 7 and len({cdata.outcome_seed(7, i) for i in range(50)}) == 50


def test_crossdqn_bad_row_in_a_later_row_group_is_named_by_its_row_in_the_file(crossdqn_logs: list[Path],
                                                                              tmp_path: Path) -> None:
    def joined(t: pa.Table) -> pa.Table:  # every outcome joined: nothing to simulate, nothing refused
        return t.set_column(t.schema.get_field_index("r_ad"), "r_ad", t["r_ad"].fill_null(0.5))

    first, second = joined(pq.read_table(crossdqn_logs[0])), joined(pq.read_table(crossdqn_logs[1]))
    pq.write_table(first, tmp_path / "log0.parquet", row_group_size=40)
    decided = ~np.array(second["alloc_fallback"].to_pylist()) & ~np.array(second["alloc_obs"].is_null().to_pylist())
    row = int(np.flatnonzero(decided[40:80])[0]) + 40  # a decided row in the second row group of 40
    bad = tmp_path / "log1.parquet"

    def refused(column: str, values: pa.Array, match: str) -> None:
        pq.write_table(second.set_column(second.schema.get_field_index(column), column, values), bad,
                       row_group_size=40)
        with pytest.raises(DataError, match=match):
            cdata.import_decision_log([tmp_path / "log0.parquet", bad], tmp_path / "out", CCFG)
        assert not (tmp_path / "out").exists()

    actions = second["alloc_action"].to_numpy().copy()
    actions[row] = CCFG.num_actions
    refused("alloc_action", pa.array(actions, pa.int32()),
            rf"log1\.parquet: field 'alloc_action' row {row}: value {float(CCFG.num_actions)} is not an action")
    props = second["alloc_propensity"].to_numpy().copy()
    props[row] = 1.5
    refused("alloc_propensity", pa.array(props), rf"log1\.parquet: field 'alloc_propensity' row {row}: value 1.5 is not")
    fee = second["r_fee"].to_pylist()
    fee[row] = None
    refused("r_fee", pa.array(fee, pa.float64()), rf"log1\.parquet: field 'r_fee' row {row}: null \(no outcome joined")
    obs = second["alloc_obs"].to_pylist()
    obs[row] = obs[row][:-1]
    refused("alloc_obs", pa.array(obs, pa.list_(pa.float32())), rf"log1\.parquet: field 'alloc_obs' row {row}: 109 floats")
    cdata.import_decision_log([tmp_path / "log0.parquet"], tmp_path / "ok", CCFG)  # the first file alone is fine


# ----------------------------------------------------------------------------- drlput-log

DCFG = DRLPUTConfig()


def _drlput_logs(folder: Path, sizes: tuple[int, ...], ids: np.ndarray, row_group: int = 70) -> list[Path]:
    """Graph-schema logs of ``sum(sizes)`` requests with the request ids ``ids`` (strings)."""
    probs = behaviour_probs(ActionSpace(DCFG.action), "uniform", 1.0)
    df = ddata.log_requests(DCFG, sum(sizes), 3, probs, "uniform")
    df[C.CAMPAIGN] = df[C.CAMPAIGN].clip(-1, 1)
    df[C.REQUEST_ID] = [f"feed-{i:06d}" for i in ids]
    files, lo = [], 0
    for i, n in enumerate(sizes):
        table = pa.Table.from_pandas(df.iloc[lo:lo + n], schema=pa.schema(UtilityPolicy.log_fields()),
                                     preserve_index=False)
        files.append(folder / f"log{i}.parquet")
        pq.write_table(table, files[-1], row_group_size=row_group)
        lo += n
    return files


def _drlput_reference(files: list[Path], out: Path) -> pd.DataFrame:
    """The whole-frame import: every file read whole, a stable sort by request id, cut by fractions."""
    df = pd.concat([pq.read_table(f).to_pandas()[list(C.LOG_COLUMNS)] for f in files], ignore_index=True)
    df = df.sort_values(C.REQUEST_ID, kind="stable", ignore_index=True)
    n_val, n_test = (max(1, int(round(len(df) * f))) for f in (DCFG.behaviour.val_fraction,
                                                                DCFG.behaviour.test_fraction))
    n_train = len(df) - n_val - n_test
    write_dataset(out, {"train": df.iloc[:n_train], "val": df.iloc[n_train:n_train + n_val],
                        "test": df.iloc[n_train + n_val:]}, source="reference")
    return df


def _same_splits(a: Path, b: Path) -> None:
    x, y = read_dataset(a), read_dataset(b)
    assert x.splits == y.splits == ["train", "val", "test"]
    for s in x.splits:
        pd.testing.assert_frame_equal(x.read(s), y.read(s))
    assert x.manifest["content_hash"] == y.manifest["content_hash"]  # the same files, byte for byte


def test_drlput_streamed_import_in_log_order_is_the_whole_frame_result(tmp_path: Path) -> None:
    files = _drlput_logs(tmp_path, (260, 410, 330), np.arange(1000))
    ddata.import_decision_log(files, tmp_path / "ds", DCFG)
    _drlput_reference(files, tmp_path / "ref")
    _same_splits(tmp_path / "ds", tmp_path / "ref")
    split = read_dataset(tmp_path / "ds").meta["split"]
    assert split == {"by": "request_id", "rows": {"train": 800, "val": 100, "test": 100},
                     "request_ids_in_log_order": True, "first_out_of_order": None}


def test_drlput_ids_out_of_log_order_are_sorted_on_disk_as_the_whole_frame_sort(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ids = np.random.default_rng(0).integers(0, 400, 1000)  # unordered, repeated: ties keep the log order
    files = _drlput_logs(tmp_path, (260, 410, 330), ids)
    # runs of 100 rows merged two at a time: several spilled runs and merge levels
    monkeypatch.setattr(ddata, "sorted_frames", functools.partial(sorted_frames, run_rows=100, chunk_rows=16, fan_in=2))
    ddata.import_decision_log(files, tmp_path / "ds", DCFG)
    first = int(np.flatnonzero(np.diff(ids[:260]) < 0)[0]) + 1
    assert f"log0.parquet row {first}): sorting 1000 row(s) by request id on disk" in capsys.readouterr().err
    _drlput_reference(files, tmp_path / "ref")
    _same_splits(tmp_path / "ds", tmp_path / "ref")
    split = read_dataset(tmp_path / "ds").meta["split"]
    assert not split["request_ids_in_log_order"] and split["first_out_of_order"] == f"{files[0]} row {first}"


def test_drlput_bad_row_in_a_later_row_group_is_named_by_its_row_in_the_file(tmp_path: Path) -> None:
    files = _drlput_logs(tmp_path, (200, 200), np.arange(400))  # row groups of 70: row 100 is in the second
    second = pq.read_table(files[1])

    def refused(column: str, values: pa.Array, match: str) -> None:
        bad = tmp_path / "bad" / "log1.parquet"
        bad.parent.mkdir(exist_ok=True)
        pq.write_table(second.set_column(second.schema.get_field_index(column), column, values), bad,
                       row_group_size=70)
        with pytest.raises(DataError, match=match):
            ddata.import_decision_log([files[0], bad], tmp_path / "out", DCFG)
        assert not (tmp_path / "out").exists()

    action = second[C.ACTION].to_numpy().copy()
    action[100] = 125
    refused(C.ACTION, pa.array(action, pa.int32()),
            r"bad/log1\.parquet: field 'action' row 100: value 125 is not an action of A")
    revenue = second[C.REVENUE].to_numpy().copy()
    revenue[130] = np.inf
    refused(C.REVENUE, pa.array(revenue), r"bad/log1\.parquet: column 'revenue' has 1 NaN/inf value\(s\), first at row 130")
    refused(C.REQUEST_ID, pa.array(np.arange(200)),
            r"bad/log1\.parquet: column types differ from .*log0\.parquet's")


# ----------------------------------------------------------------------------- the external sort

@pytest.mark.parametrize("kind", ["str", "int"])
@pytest.mark.parametrize(("run_rows", "chunk_rows", "fan_in"), [(10**6, 64, 16), (300, 64, 2), (500, 37, 3)])
def test_external_sort_is_a_stable_sort_with_nulls_last(kind: str, run_rows: int, chunk_rows: int, fan_in: int,
                                                        tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 3000
    keys = rng.integers(0, 500, n)
    df = pd.DataFrame({"id": [f"r{k}" for k in keys] if kind == "str" else keys, "v": np.arange(n),
                       "x": rng.random(n).astype(np.float32)})
    if kind == "str":
        df.loc[rng.choice(n, 25, replace=False), "id"] = None
    frames = [df.iloc[i:i + 211] for i in range(0, n, 211)]
    got = pd.concat(list(sorted_frames(frames, "id", run_rows=run_rows, chunk_rows=chunk_rows, fan_in=fan_in,
                                       tmp_dir=tmp_path)), ignore_index=True)
    pd.testing.assert_frame_equal(got, df.sort_values("id", kind="stable", ignore_index=True))
    assert list(tmp_path.iterdir()) == []  # the spilled runs are gone
