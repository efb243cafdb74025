"""Baseline bidders, AuctionNet state features, the trajectory writer and the importer's errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adray.data import DataError, read_dataset
from workloads.vamo.bidders import FixedAlpha, LpTable, OnlineLp, PidBudget, PidCpa, logging_market
from workloads.vamo.config import SimConfig
from workloads.vamo.data import lp_table, trajectories
from workloads.vamo.importer import import_auctionnet
from workloads.vamo.sim import DayLog, simulate_day
from workloads.vamo.trajectory import COLUMNS, STATE_COLS, state_features, trajectory_frame

SMALL = SimConfig(impressions=20_000, steps=12, task_advertisers=(4, 4, 2), chunk_rows=2048)


def _frames(days=(1, 2, 3), seed: int = 0) -> pd.DataFrame:
    n = SMALL.n_advertisers
    return pd.concat([trajectory_frame(simulate_day(SMALL, seed, d, logging_market(n, seed, d, 0.3, None)))
                      for d in days], ignore_index=True)


def test_state_features_match_auctionnet_pandas_definition() -> None:
    rng = np.random.default_rng(0)
    steps = 7
    log = DayLog.empty(steps, 1)
    log.rows[:] = rng.integers(50, 100, steps)
    for f in ("bid_sum", "pvalue_sum", "conversions", "wins"):
        getattr(log, f)[:, 0] = rng.random(steps) * 10
    log.lwc_sum[:] = rng.random(steps) * 5
    log.remaining[:, 0] = np.linspace(100, 40, steps)
    got = state_features(log, np.array([100.0]))[:, 0]
    # AuctionNet's rl_data_generator, literally: per-step means, expanding / rolling(3) shifted by 1
    g = pd.DataFrame({"bid": log.bid_sum[:, 0] / log.rows, "lwc": log.lwc_sum / log.rows,
                      "pv": log.pvalue_sum[:, 0] / log.rows, "conv": log.conversions[:, 0] / log.rows,
                      "xi": log.wins[:, 0] / log.rows, "vol": log.rows})
    exp = {c: g[c].expanding().mean().shift(1).fillna(0) for c in ("bid", "lwc", "pv", "conv", "xi")}
    l3 = {c: g[c].rolling(3, min_periods=1).mean().shift(1).fillna(0) for c in ("bid", "lwc", "pv", "conv", "xi")}
    want = np.stack([
        (steps - np.arange(steps)) / steps, log.remaining[:, 0] / 100, exp["bid"], l3["bid"], exp["lwc"],
        exp["pv"], exp["conv"], exp["xi"], l3["lwc"], l3["pv"], l3["conv"], l3["xi"], g["pv"], g["vol"],
        g["vol"].rolling(3, min_periods=1).sum().shift(1).fillna(0), g["vol"].cumsum().shift(1).fillna(0),
    ], 1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state_features(log, np.array([100.0]), upto=3)[:, 0], want[:4])


def test_fixed_and_pid_bidders_react_as_expected() -> None:
    res = simulate_day(SMALL, 0, 1, [(np.arange(10), FixedAlpha(0.5))])
    np.testing.assert_allclose(res.log.alpha[0], 0.5 * res.day.cpa)
    idx = np.arange(3)
    pid = PidBudget()
    pid.start(res, idx)
    res.log.cost[0, idx] = 0.0  # nothing spent: pace up
    assert (pid.act(1, res, idx) > res.day.cpa[idx]).all()
    pid = PidBudget()
    pid.start(res, idx)
    res.log.cost[0, idx] = res.log.remaining[1, idx]  # a step's spend = all that is left: slow down
    assert (pid.act(1, res, idx) < res.day.cpa[idx]).all()
    cpa = PidCpa()
    cpa.start(res, idx)
    res.log.conversions[0, idx] = 2.0
    res.log.cost[0, idx] = 4 * res.day.cpa[idx]  # realised CPA twice the constraint: bid lower
    assert (cpa.act(1, res, idx) < res.day.cpa[idx]).all()


def test_online_lp_reads_the_efficiency_at_which_the_budget_runs_out() -> None:
    market = {"step": np.array([0, 0, 1, 1], np.int16), "lwc": np.array([1.0, 2.0, 3.0, 4.0], np.float32),
              "pvalue": np.array([[0.1], [0.1], [0.05], [0.02]], np.float32)}
    table = LpTable(market, steps=2, stride=1)
    eff = [1.0 / 0.1001, 2.0 / 0.1001, 3.0 / 0.0501, 4.0 / 0.0201]  # sorted; cumulative cost 1, 3, 6, 10
    assert table.alpha(0, 0, 2.5) == pytest.approx(eff[1])
    assert table.alpha(0, 0, 5.0) == pytest.approx(eff[2])
    assert table.alpha(0, 0, 50.0) is None  # the budget outlasts the market: keep the default
    assert table.alpha(0, 1, 2.0) == pytest.approx(eff[2])  # from step 1 only steps >= 1 count
    res = simulate_day(SMALL, 0, 1, [(np.arange(10), FixedAlpha())])
    lp = OnlineLp(lp_table(SMALL, 0))  # fitted on the reference day's market sample
    lp.start(res, np.arange(10))
    assert (lp.act(0, res, np.arange(10)) <= 1.5 * res.day.cpa + 1e-9).all()


def test_writer_round_trips_through_the_importer(tmp_path: Path) -> None:
    frame = _frames()
    assert list(frame.columns[: len(COLUMNS)]) == list(COLUMNS)
    ends = frame.groupby(["deliveryPeriodIndex", "advertiserNumber"])["done"].agg(["sum", "last"])
    assert (ends["sum"] == 1).all() and (ends["last"] == 1).all()  # each trajectory ends at its first done
    path = tmp_path / "traj.csv"
    frame.to_csv(path, index=False)
    import_auctionnet([path], tmp_path / "ds", None)
    ds = read_dataset(tmp_path / "ds")
    assert ds.meta["val_period"] == 2 and ds.meta["test_period"] == 3 and ds.splits == ["train", "val", "test"]
    assert ds.meta["steps_per_day"] == SMALL.steps  # read back from the timeleft feature
    train = ds.read("train")
    assert len(train) == int((frame["deliveryPeriodIndex"] == 1).sum())
    first = frame[frame["deliveryPeriodIndex"] == 1]
    want = np.array([[float(v) for v in s.strip("()").split(",")] for s in first["state"]])
    np.testing.assert_allclose(train[list(STATE_COLS)].to_numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(train["action"], first["action"], rtol=1e-6)
    tr = trajectories(train)
    assert (tr.rtg[:, 0] >= tr.rtg.max(1) - 1e-4).all()  # return-to-go never grows
    assert (tr.length == train.groupby(["period", "advertiser"]).size().to_numpy()).all()


def _csv(tmp_path: Path, edit=None, name: str = "t.csv") -> Path:
    frame = _frames()
    if edit:
        edit(frame)
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("edit, pattern", [
    (lambda f: f.drop(columns=["CPAConstraint"], inplace=True), r"line 1: missing column\(s\) \['CPAConstraint'\]"),
    (lambda f: f.__setitem__("state", f["state"].where(f.index != 5, "(0.1, oops, 0.3)")), r"line 7: field 'state'"),
    (lambda f: f.__setitem__("budget", f["budget"].where(f.index != 3, -5.0)), r"line 5: field 'budget'.*> 0"),
    (lambda f: f.__setitem__("CPAConstraint", f["CPAConstraint"].where(f.index != 0, 0.0)), r"line 2: field 'CPAConstraint'"),
    (lambda f: f.__setitem__("next_state", f["next_state"].where(f.index != 2, None)), r"line 4: field 'next_state' is empty"),
    (lambda f: f.__setitem__("action", f["action"].astype(object).where(f.index != 4, "abc")), r"line 6: field 'action'"),
    (lambda f: f.__setitem__("state", f["state"].where(f.index != 8, "(0.5, 0.5)")), r"line 10: field 'state' has 2 values"),
    (lambda f: f.__setitem__("done", f["done"].where(f.index != 1, 3)), r"line 3: field 'done'"),
])
def test_importer_names_file_line_and_field(tmp_path: Path, edit, pattern: str) -> None:
    path = _csv(tmp_path, edit)
    with pytest.raises(DataError, match=pattern) as exc:
        import_auctionnet([path], tmp_path / "out", None)
    assert str(path) in str(exc.value)
    assert not (tmp_path / "out").exists()  # nothing written


def test_importer_refuses_another_state_size_as_a_whole(tmp_path: Path) -> None:
    def widen(f: pd.DataFrame) -> None:
        f["state"] = f["state"].str.replace(")", ", 0.9)", regex=False)
        f["next_state"] = f["next_state"].str.replace(")", ", 0.9)", regex=False)
    path = _csv(tmp_path, widen)
    with pytest.raises(DataError, match=r"have 17 values.*16-feature state \(timeleft, bgtleft"):
        import_auctionnet([path], tmp_path / "out", None)


def test_importer_accepts_numpy2_reprs_parquet_and_files_without_task(tmp_path: Path) -> None:
    frame = _frames().drop(columns=["taskIndex"])
    np2 = frame.copy()
    np2["state"] = np2["state"].str.replace(r"([-0-9.e]+)", r"np.float64(\1)", regex=True)
    np2.to_csv(tmp_path / "np2.csv", index=False)
    import_auctionnet([tmp_path / "np2.csv"], tmp_path / "a", None)
    pq = frame.copy()
    pq.to_parquet(tmp_path / "t.parquet")
    import_auctionnet([tmp_path / "t.parquet"], tmp_path / "b", None)
    a, b = read_dataset(tmp_path / "a").read("train"), read_dataset(tmp_path / "b").read("train")
    pd.testing.assert_frame_equal(a, b)
    meta = read_dataset(tmp_path / "a").meta
    assert (a["task"] == 0).all() and meta["task_mapping"]["mode"] == "single"  # no task invented
    assert meta["train_trajectories"] == {"single task": a.groupby(["period", "advertiser"]).ngroups}


def test_importer_needs_three_periods(tmp_path: Path) -> None:
    path = _csv(tmp_path, lambda f: f.drop(f.index[f["deliveryPeriodIndex"] == 2], inplace=True))
    with pytest.raises(DataError, match=r"2 delivery period\(s\) \(\[1, 3\]\); VAMO needs at least three"):
        import_auctionnet([path], tmp_path / "out", None)
