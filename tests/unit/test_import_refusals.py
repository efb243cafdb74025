"""Every importer refuses what cannot be true, naming the file, the row and the field; nothing the
files lack is filled in unless asked (and then the manifest and the console say how much); an
existing dataset is replaced only with --overwrite, and a failed import leaves no trace (issue 20)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from adray.cli import app
from adray.config import ConfigError
from adray.data import DataError, read_dataset
from adray.data.options import parse_options
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import import_decision_log as import_crossdqn_log
from workloads.crossdqn.sim import FeedSim, make_requests
from workloads.drlput.config import DRLPUTConfig
from workloads.drlput.data import import_decision_log as import_drlput_log
from workloads.mtorl.config import MTORLConfig
from workloads.mtorl.data import import_criteo
from workloads.pwiser.config import PWiseRConfig
from workloads.pwiser.data import import_alicpp, import_aliexpress
from workloads.vamo.data import load_split as vamo_split
from workloads.vamo.importer import import_auctionnet

# --------------------------------------------------------------------------- the same fault, the same message


PARQUET_IMPORTERS: dict[str, Callable[[Path, Path], None]] = {
    "crossdqn-log": lambda f, out: import_crossdqn_log([f], out, CrossDQNConfig()),
    "drlput-log": lambda f, out: import_drlput_log([f], out, DRLPUTConfig()),
    "auctionnet-trajectory": lambda f, out: import_auctionnet([f], out, None),
    "criteo-sequence": lambda f, out: import_criteo([f], out, MTORLConfig(source="criteo")),
    "aliexpress": lambda f, out: import_aliexpress([f], out, PWiseRConfig()),
}
PARQUET_FAULTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "directory": (lambda d: _mkdir(d / "log.parquet"), "is a directory; expected a"),
    "header-only": (lambda d: _header_only(d / "log.parquet"), "no data rows (header only); expected a"),
    "empty": (lambda d: _write(d / "log.parquet", b""), "file is empty; expected a Parquet schema and rows"),
    "not-parquet": (lambda d: _write(d / "log.parquet", b"a,b\n1,2\n"), "not a readable Parquet file"),
    "missing": (lambda d: d / "log.parquet", "file does not exist; expected a"),
}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _header_only(path: Path) -> Path:
    pq.write_table(pa.table({"alloc_obs": pa.array([], pa.list_(pa.float32())), "uid": pa.array([], pa.int64())}),
                   path)
    return path


@pytest.mark.parametrize("fault", list(PARQUET_FAULTS))
@pytest.mark.parametrize("fmt", list(PARQUET_IMPORTERS))
def test_a_parquet_fault_gets_the_same_message_in_every_importer(tmp_path: Path, fmt: str, fault: str) -> None:
    make, message = PARQUET_FAULTS[fault]
    bad = make(tmp_path)
    with pytest.raises(DataError) as info:
        PARQUET_IMPORTERS[fmt](bad, tmp_path / "out")
    assert str(info.value).startswith(f"{bad}: {message}"), str(info.value)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- AuctionNet trajectories

STEPS = 4  # a tiny day: timeleft = (STEPS - t) / STEPS


def _state(t: int) -> str:
    return "(" + ", ".join(str(v) for v in [(STEPS - t) / STEPS, 1 - 0.2 * t] + [0.1] * 14) + ")"


def auctionnet_rows(periods: tuple[int, ...] = (1, 2, 3), advertisers: int = 2, task: bool = False) -> pd.DataFrame:
    """Valid AuctionNet trajectory rows: each (period, advertiser) runs steps 0..STEPS-1, done at the last."""
    rows = []
    for p in periods:
        for a in range(advertisers):
            for t in range(STEPS):
                last = t == STEPS - 1
                rows.append({"deliveryPeriodIndex": p, "advertiserNumber": a, "advertiserCategoryIndex": a + 4,
                             "budget": 100.0, "CPAConstraint": 10.0, "realAllCost": 50.0, "realAllConversion": 5.0,
                             "timeStepIndex": t, "state": _state(t), "action": 1.5, "reward": 1.0,
                             "reward_continuous": 0.5, "done": int(last), "next_state": None if last else _state(t + 1),
                             **({"taskIndex": a % 3} if task else {})})
    return pd.DataFrame(rows)


def _line(frame: pd.DataFrame, period: int, adv: int, step: int) -> int:
    """The CSV line of a row (header = line 1)."""
    pos = np.flatnonzero(((frame["deliveryPeriodIndex"] == period) & (frame["advertiserNumber"] == adv)
                          & (frame["timeStepIndex"] == step)).to_numpy())
    return int(pos[0]) + 2


def _inf_action(f: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    f.loc[5, "action"] = np.inf
    return f, 7


def _missing_middle_step(f: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    f = f.drop(index=f.index[(f.deliveryPeriodIndex == 1) & (f.advertiserNumber == 1) & (f.timeStepIndex == 2)])
    return f.reset_index(drop=True), _line(f.reset_index(drop=True), 1, 1, 3)


def _past_the_day(f: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    key = (f.deliveryPeriodIndex == 2) & (f.advertiserNumber == 0)
    last = f.index[key & (f.timeStepIndex == STEPS - 1)][0]
    f.loc[last, ["done", "next_state"]] = [0, _state(STEPS)]
    extra = f.loc[[last]].assign(timeStepIndex=STEPS, state=_state(STEPS), done=1, next_state=None)
    f = pd.concat([f.loc[:last], extra, f.loc[last + 1:]], ignore_index=True)
    return f, _line(f, 2, 0, STEPS)


def _done_in_the_middle(f: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    row = f.index[(f.deliveryPeriodIndex == 3) & (f.advertiserNumber == 1) & (f.timeStepIndex == 1)][0]
    f.loc[row, "done"] = 1
    return f, int(row) + 2


def _done_never(f: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    f = f.drop(index=f.index[(f.deliveryPeriodIndex == 1) & (f.advertiserNumber == 0) & (f.timeStepIndex == 3)])
    return f.reset_index(drop=True), _line(f.reset_index(drop=True), 1, 0, 2)


TRAJECTORY_FAULTS = {
    "inf action": (_inf_action, "action", "inf is not a finite number"),
    "missing middle step": (_missing_middle_step, "timeStepIndex", "step 3 follows step 1; step 2 is missing"),
    "step past the day's end": (_past_the_day, "timeStepIndex", "step 4 is past the day's end (a day of 4 steps"),
    "done in the middle": (_done_in_the_middle, "done", "1 at step 1, but the trajectory goes on to step 3"),
    "done never": (_done_never, "done", "0 at step 2, the trajectory's last row: it never ends"),
}


@pytest.mark.parametrize("fault", list(TRAJECTORY_FAULTS))
def test_auctionnet_impossible_trajectories_are_refused_by_file_line_and_field(tmp_path: Path, fault: str) -> None:
    edit, field, text = TRAJECTORY_FAULTS[fault]
    frame, line = edit(auctionnet_rows())
    path = tmp_path / "traj.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        import_auctionnet([path], tmp_path / "out", None)
    assert str(info.value).startswith(f"{path}: line {line}: field {field!r}: {text}"), str(info.value)
    assert not (tmp_path / "out").exists()


def test_auctionnet_parquet_names_the_row(tmp_path: Path) -> None:
    frame, _ = _done_in_the_middle(auctionnet_rows())
    frame.to_parquet(tmp_path / "traj.parquet")
    with pytest.raises(DataError, match=r"traj\.parquet: row 21: field 'done': 1 at step 1"):
        import_auctionnet([tmp_path / "traj.parquet"], tmp_path / "out", None)


def test_auctionnet_without_tasks_is_single_task_and_vamo_refuses_to_train_on_it(tmp_path: Path) -> None:
    auctionnet_rows().to_csv(tmp_path / "t.csv", index=False)
    import_auctionnet([tmp_path / "t.csv"], tmp_path / "single", None)
    ds = read_dataset(tmp_path / "single")
    assert ds.meta["task_mapping"]["mode"] == "single" and (ds.read("train")["task"] == 0).all()
    with pytest.raises(DataError, match=r"single\S*: a single-task dataset .* every VAMO method, stl included, "
                                        r"trains the 3 tasks .*--option task_column=COLUMN"):
        vamo_split(tmp_path / "single", "train")


def test_auctionnet_task_mapping_is_explicit_and_recorded(tmp_path: Path) -> None:
    auctionnet_rows(task=True).to_csv(tmp_path / "with_task.csv", index=False)
    import_auctionnet([tmp_path / "with_task.csv"], tmp_path / "column", None)
    ds = read_dataset(tmp_path / "column")
    assert ds.meta["task_mapping"] == {"mode": "multi", "from": "column taskIndex"}
    assert ds.read("train")["task"].tolist() == [0] * STEPS + [1] * STEPS
    path = tmp_path / "t.csv"
    auctionnet_rows().assign(objective=lambda f: np.where(f.advertiserNumber == 0, "cart", "gmv")).to_csv(path, index=False)
    import_auctionnet([path], tmp_path / "names", None, task_column="objective")
    assert read_dataset(tmp_path / "names").read("train")["task"].tolist() == [2] * STEPS + [0] * STEPS
    import_auctionnet([path], tmp_path / "map", None, task_column="advertiserCategoryIndex", task_map="4:dir_gmv,5:cart")
    ds = read_dataset(tmp_path / "map")
    assert ds.read("train")["task"].tolist() == [1] * STEPS + [2] * STEPS
    assert ds.meta["task_mapping"] == {"mode": "multi", "from": "column advertiserCategoryIndex",
                                       "map": {"4": "dir_gmv", "5": "cart"}}
    assert vamo_split(tmp_path / "map", "train")["task"].tolist() == [1, 2]
    with pytest.raises(DataError, match=rf"{path}: line 6: field 'advertiserCategoryIndex': 5; expected a value of "
                                        r"task_map \(4\)"):
        import_auctionnet([path], tmp_path / "out", None, task_column="advertiserCategoryIndex", task_map="4:gmv")
    with pytest.raises(DataError, match="task_map='4:gmv' needs --option task_column"):
        import_auctionnet([path], tmp_path / "out", None, task_map="4:gmv")
    with pytest.raises(DataError, match=r"task_map: '4=gmv'; expected VALUE:TASK pairs"):
        import_auctionnet([path], tmp_path / "out", None, task_column="advertiserCategoryIndex", task_map="4=gmv")
    with pytest.raises(DataError, match=rf"{path}: no task column 'taskIndex', but {tmp_path / 'with_task.csv'} has one"):
        import_auctionnet([tmp_path / "with_task.csv", path], tmp_path / "out", None)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- Criteo journeys


def criteo_rows(users: int = 20, steps: int = 3) -> pd.DataFrame:
    rows = [{"uid": u, "campaign": 0.5, "conversion": 0, "attribution": 0, "click": (u + t) % 2, "click_nb": -1,
             "cost": 0.01 * (t + 1), "cpo": 0.5, **{f"cat{i}": 0.1 * i for i in range(1, 10)},
             **{f"Type_{k}": k == (u + t) % 3 for k in range(3)}}
            for u in range(users) for t in range(steps)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("field, value, expected", [
    ("click", 1.5, "0 or 1"), ("click", -7, "0 or 1"), ("conversion", 1.5, "0 or 1"),
    ("cost", -0.5, "a cost in [0, 1]"), ("cost", 1e308, "a cost in [0, 1]"),
])
def test_criteo_impossible_values_are_refused_by_file_row_and_field(tmp_path: Path, field: str, value: float,
                                                                   expected: str) -> None:
    df = criteo_rows()
    df[field] = df[field].astype(float)
    df.loc[7, field] = value
    path = tmp_path / "journeys.csv"
    df.to_csv(path)  # with the unnamed index column, like the release
    with pytest.raises(DataError) as info:
        import_criteo([path], tmp_path / "out", MTORLConfig(source="criteo"))
    assert str(info.value).startswith(f"{path}: row 7: field {field!r}: {float(value)!r}; expected {expected}"), str(info.value)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- crossdqn-log: nothing made up

CDQN = CrossDQNConfig(seed=3)


def _alloc_log(path: Path, n: int = 12, **columns: pa.Array) -> Path:
    obs = FeedSim(CDQN.sim, make_requests(CDQN.sim, n, 1)).observe()
    table = pa.table({"alloc_obs": pa.array(obs.tolist(), pa.list_(pa.float32())),
                      "alloc_action": pa.array(np.arange(n) % CDQN.num_actions, pa.int64()),
                      "alloc_fallback": pa.array(np.zeros(n, bool)),
                      "alloc_propensity": pa.array(np.full(n, 0.25))})
    for name, values in columns.items():
        if values is None:
            table = table.drop_columns([name])
        elif name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), name, values)
        else:
            table = table.append_column(name, values)
    pq.write_table(table, path)
    return path


def _outcomes(n: int = 12, **bad: tuple[int, Any]) -> dict[str, pa.Array]:
    cols = {"r_ad": [0.1] * n, "r_fee": [0.2] * n, "r_ex": [1.0] * n, "orders": [0.0] * n}
    for name, (row, value) in bad.items():
        cols[name][row] = value
    return {k: pa.array(v, pa.float64()) for k, v in cols.items()}


@pytest.mark.parametrize("columns, simulate, message", [
    ({"alloc_propensity": None}, True, r"missing column\(s\) \['alloc_propensity'\]; .* propensity 'alloc_propensity' "
                                       r"is required"),
    ({"alloc_propensity": pa.array([0.25] * 5 + [None] * 7, pa.float64())}, True,
     r"field 'alloc_propensity' row 5: null in a row the allocation model decided"),
    ({}, False, r"missing outcome column\(s\) \['r_ad', 'r_fee', 'r_ex', 'orders'\] \(every row\).*"
                r"--option simulate_outcomes=true"),
    (_outcomes(r_fee=(4, None)), False, r"field 'r_fee' row 4: null \(no outcome joined to this decision; 1 such "
                                        r"row\(s\)\); import with `--option simulate_outcomes=true`"),
    (_outcomes(r_ad=(2, float("inf"))), True, r"field 'r_ad' row 2: value inf; expected a finite value >= 0"),
    (_outcomes(r_ad=(3, -1.0)), True, r"field 'r_ad' row 3: value -1.0; expected a finite value >= 0"),
    (_outcomes(orders=(6, 1.5)), True, r"field 'orders' row 6: value 1.5; expected a count >= 0"),
])
def test_crossdqn_log_refuses_what_it_would_have_to_make_up(tmp_path: Path, columns: dict, simulate: bool,
                                                            message: str) -> None:
    path = _alloc_log(tmp_path / "log.parquet", **columns)
    with pytest.raises(DataError, match=rf"^{path}: {message}"):
        import_crossdqn_log([path], tmp_path / "out", CDQN, simulate_outcomes=simulate)
    assert not (tmp_path / "out").exists()


def test_crossdqn_log_simulates_only_when_asked_and_says_how_many(tmp_path: Path) -> None:
    path = _alloc_log(tmp_path / "log.parquet", **_outcomes(r_ex=(0, None)) | {"orders": pa.array([None, *[1.0] * 11])})
    res = CliRunner().invoke(app, ["data", "import", "crossdqn-log", str(path), "--out", str(tmp_path / "ds"),
                                   "--option", "simulate_outcomes=true"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "SIMULATED for 1 of 12 row(s)" in res.output
    meta = read_dataset(tmp_path / "ds").meta
    assert meta["outcomes"] == {"joined": 11, "simulated": 1} and meta["filled_in"]["outcomes"]["rows"] == 1
    assert meta["import_options"] == {"simulate_outcomes": True}
    assert "filled in (not in the files)" in res.output
    shown = CliRunner().invoke(app, ["data", "show", str(tmp_path / "ds")])
    assert '"rows": 1' in shown.output and "import options" in shown.output


# --------------------------------------------------------------------------- --overwrite, atomic writes, options


def _import_aliexpress(samples: Path, out: Path, *extra: str) -> Any:
    src = samples / "aliexpress_tiny"
    return CliRunner().invoke(app, ["data", "import", "aliexpress", str(src / "train.csv"), str(src / "test.csv"),
                                    "--out", str(out), *extra])


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_an_existing_dataset_is_replaced_only_with_overwrite(tmp_path: Path, samples: Path) -> None:
    out = tmp_path / "ds"
    assert _import_aliexpress(samples, out).exit_code == 0
    before = _tree(out)
    res = _import_aliexpress(samples, out)
    assert isinstance(res.exception, DataError) and str(res.exception).startswith(
        f"{out}: a dataset is already there; pass --overwrite to replace it")
    res = CliRunner().invoke(app, ["data", "make", "pwiser", "--config", "smoke", "--out", str(out)])
    assert isinstance(res.exception, DataError) and "pass --overwrite" in str(res.exception)
    assert _tree(out) == before
    assert _import_aliexpress(samples, out, "--overwrite").exit_code == 0
    before = _tree(out)  # the same data; the manifest's "created" may differ
    # a failed import (the test file lacks a feature column) leaves the old dataset as it was, and no temp dirs
    bad = tmp_path / "test.csv"
    pd.read_csv(samples / "aliexpress_tiny/test.csv").drop(columns=["numerical_5"]).to_csv(bad, index=False)
    res = CliRunner().invoke(app, ["data", "import", "aliexpress", str(samples / "aliexpress_tiny/train.csv"), str(bad),
                                   "--out", str(out), "--overwrite"])
    assert isinstance(res.exception, DataError)
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ds", "test.csv"]


def test_what_is_not_a_dataset_is_never_replaced(tmp_path: Path, samples: Path) -> None:
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")
    res = _import_aliexpress(samples, mine, "--overwrite")
    assert isinstance(res.exception, DataError) and str(res.exception).startswith(
        f"{mine}: a directory that is not a dataset (no manifest.json) and not empty")
    assert (mine / "todo.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    res = _import_aliexpress(samples, tmp_path / "file", "--overwrite")
    assert isinstance(res.exception, DataError) and "is a file" in str(res.exception)
    (tmp_path / "empty").mkdir()
    assert _import_aliexpress(samples, tmp_path / "empty").exit_code == 0  # an empty directory is fine


def test_importer_options_are_typed_and_unknown_ones_named() -> None:
    assert parse_options(import_crossdqn_log, "crossdqn-log", ["simulate_outcomes=yes"]) == {"simulate_outcomes": True}
    assert parse_options(import_criteo, "criteo-sequence", None) == {}
    with pytest.raises(ConfigError, match=r"crossdqn-log has no option 'simulate'; its options: simulate_outcomes "
                                          r"\(bool, default False\)"):
        parse_options(import_crossdqn_log, "crossdqn-log", ["simulate=true"])
    with pytest.raises(ConfigError, match=r"criteo-sequence has no option 'x'; its options: none"):
        parse_options(import_criteo, "criteo-sequence", ["x=1"])
    with pytest.raises(ConfigError, match="expected true or false"):
        parse_options(import_crossdqn_log, "crossdqn-log", ["simulate_outcomes=maybe"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_options(import_crossdqn_log, "crossdqn-log", ["simulate_outcomes"])


# --------------------------------------------------------------------------- out-of-vocabulary ids, counted


def test_unseen_categorical_values_are_counted_per_split_and_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, ids in (("train", (0, 10)), ("test", (5, 15))):  # test: ids 10..14 were never seen in train
        pd.DataFrame({"click": 0, "purchase": 0, "101": rng.integers(*ids, 200), "121": rng.integers(0, 3, 200),
                      "D508": rng.random(200)}).to_csv(tmp_path / f"{name}.csv", index=False)
    import_alicpp([tmp_path / "train.csv", tmp_path / "test.csv"], tmp_path / "ds", PWiseRConfig())
    ds = read_dataset(tmp_path / "ds")
    raw = pd.read_csv(tmp_path / "test.csv")
    assert ds.meta["out_of_vocab"]["test"] == {"101": int((raw["101"] >= 10).sum())}
    assert ds.meta["out_of_vocab"]["train"] == {} and (ds.read("test")["101"] == 0).sum() == (raw["101"] >= 10).sum()
    shown = CliRunner().invoke(app, ["data", "show", str(tmp_path / "ds")])
    assert "out-of-vocabulary ids (mapped to 0, per split and column)" in shown.output
    assert json.dumps(ds.meta["out_of_vocab"]) in shown.output
