"""VAMO data at scale, without Ray: the streamed importer and generator give the dataset the
whole-frame path gave (the oracle below is that path as it was, kept here); the importer's
period-at-a-time assumption is refused clearly when broken; the streaming read finds every
trajectory exactly once whatever the row groups and files cut, and its windows, validation arrays,
window counts and meta sample are those of the in-memory path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adray.data import DataError, DatasetWriter, csvfile, read_dataset, write_dataset
from workloads.vamo import importer, stream
from workloads.vamo.bidders import logging_market
from workloads.vamo.config import TASKS, SimConfig, VamoConfig
from workloads.vamo.data import load_split, log_day, lp_table, make_data
from workloads.vamo.importer import import_auctionnet, parse_states
from workloads.vamo.sim import simulate_day
from workloads.vamo.train import load_windows
from workloads.vamo.trajectory import STATE_COLS, STATE_FEATURES, TASK_COLUMN, period_rows, trajectory_frame

SMALL = SimConfig(impressions=20_000, steps=12, task_advertisers=(4, 4, 2), chunk_rows=2048)


def _frames(days=(1, 2, 3, 4, 5), seed: int = 0) -> pd.DataFrame:
    n = SMALL.n_advertisers
    return pd.concat([trajectory_frame(simulate_day(SMALL, seed, d, logging_market(n, seed, d, 0.3, None)))
                      for d in days], ignore_index=True)


# ----------------------------------------------------------------------------- the whole-frame oracle


def whole_frame(frame: pd.DataFrame, states: np.ndarray, single: bool = False) -> tuple[dict[str, pd.DataFrame], dict]:
    """``trajectory.to_dataset`` as it was before streaming (the splits and the manifest's meta)."""
    # the rows, penalties and return-to-go are per trajectory: the whole frame at once
    df = period_rows(frame if TASK_COLUMN in frame else frame.assign(**{TASK_COLUMN: 0}), states)
    periods = np.sort(df["period"].unique())
    train = df[df["period"] < periods[-2]].reset_index(drop=True)
    splits = {"train": train, "val": df[df["period"] == periods[-2]].reset_index(drop=True),
              "test": df[df["period"] == periods[-1]].reset_index(drop=True)}
    starts = train.loc[train["step"] == 0, "task"]
    counts = {"single task": len(starts)} if single else {TASKS[k]: int((starts == k).sum()) for k in range(len(TASKS))}
    step, left = df["step"].to_numpy(), df["s0"].to_numpy(np.float64)
    known = (step > 0) & (left < 1)
    per_day = int(round(float(np.median(step[known] / (1 - left[known]))))) if known.any() else int(step.max()) + 1
    info = {"tasks": list(TASKS), "state_features": list(STATE_FEATURES), "train_trajectories": counts,
            "periods": periods.tolist(), "val_period": int(periods[-2]), "test_period": int(periods[-1]),
            "mean_score": float(df.loc[df["step"] == 0, "rtg"].mean()), "steps_per_day": per_day,
            "max_steps": max(per_day, int(df["step"].max()) + 1),
            "state_mean": train[list(STATE_COLS)].mean().tolist(),
            "state_std": train[list(STATE_COLS)].std().fillna(1.0).tolist()}
    return splits, info


def _states(frame: pd.DataFrame) -> np.ndarray:
    return parse_states(frame["state"].tolist(), Path("x"), "state", False, np.zeros(len(frame), bool))


def assert_same_dataset(path: Path, splits: dict[str, pd.DataFrame], info: dict) -> None:
    """The dataset at ``path`` has the oracle's rows (exactly) and meta (``state_mean`` to float32
    rounding: see trajectory._Summary)."""
    ds = read_dataset(path)
    assert ds.splits == list(splits)
    for name, want in splits.items():
        pd.testing.assert_frame_equal(ds.read(name), want)
    for k, v in info.items():
        if k == "state_mean":
            np.testing.assert_allclose(ds.meta[k], v, rtol=3e-7)
        else:
            assert ds.meta[k] == v, k


# ----------------------------------------------------------------------------- importer


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return _frames()


def test_a_streamed_import_of_many_small_blocks_is_the_whole_frame_dataset(frame, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    splits, info = whole_frame(frame, _states(frame))
    frame.to_csv(tmp_path / "t.csv", index=False)
    import_auctionnet([tmp_path / "t.csv"], tmp_path / "whole", None)  # one chunk
    assert_same_dataset(tmp_path / "whole", splits, info)
    monkeypatch.setattr(importer, "CSV_BLOCK_BYTES", 4096)  # ~5 rows a chunk: periods span many chunks
    import_auctionnet([tmp_path / "t.csv"], tmp_path / "blocks", None)
    assert_same_dataset(tmp_path / "blocks", splits, info)
    assert read_dataset(tmp_path / "blocks").manifest["content_hash"] == \
        read_dataset(tmp_path / "whole").manifest["content_hash"]  # the same files, byte for byte
    monkeypatch.setattr(csvfile, "PARQUET_BATCH_ROWS", 7)
    frame.to_parquet(tmp_path / "t.parquet")
    import_auctionnet([tmp_path / "t.parquet"], tmp_path / "parquet", None)
    assert_same_dataset(tmp_path / "parquet", splits, info)


def test_files_in_any_order_and_a_period_over_two_files_give_the_same_dataset(frame, tmp_path: Path) -> None:
    splits, info = whole_frame(frame, _states(frame))
    paths = []
    for p in (4, 1, 5, 3):  # not in period order
        frame[frame["deliveryPeriodIndex"] == p].to_csv(path := tmp_path / f"period-{p}.csv", index=False)
        paths.append(path)
    two = frame[frame["deliveryPeriodIndex"] == 2]
    for half, rows in enumerate((two[two["advertiserNumber"] >= 5], two[two["advertiserNumber"] < 5])):
        rows.to_csv(path := tmp_path / f"period-2-{half}.csv", index=False)
        paths.insert(1 + half, path)
    import_auctionnet(paths, tmp_path / "out", None)
    assert_same_dataset(tmp_path / "out", splits, info)


def test_a_period_whose_rows_start_again_in_a_file_is_refused_naming_the_line(frame, tmp_path: Path) -> None:
    p1, p2 = frame[frame["deliveryPeriodIndex"] == 1], frame[frame["deliveryPeriodIndex"] == 2]
    half = len(p1) // 2
    while p1["timeStepIndex"].iloc[half] != 0:  # cut between trajectories: each part is valid on its own
        half += 1
    mixed = pd.concat([p1.iloc[:half], p2, p1.iloc[half:], frame[frame["deliveryPeriodIndex"] == 3]])
    mixed.to_csv(path := tmp_path / "mixed.csv", index=False)
    line = half + len(p2) + 2
    with pytest.raises(DataError, match=rf"{path}: line {line}: field 'deliveryPeriodIndex': period 1 again, after the "
                                        r"rows of period 2 \(its rows began at line 2\); .* sort the file"):
        import_auctionnet([path], tmp_path / "out", None)
    assert not (tmp_path / "out").exists()


def test_a_step_in_two_files_is_refused_after_every_file_is_read(frame, tmp_path: Path) -> None:
    frame.to_csv(a := tmp_path / "a.csv", index=False)
    frame[(frame["deliveryPeriodIndex"] == 3) & (frame["advertiserNumber"] == 2)].to_csv(b := tmp_path / "b.csv",
                                                                                         index=False)
    with pytest.raises(DataError, match=rf"{a}, {b}: period 3, advertiser 2, step 0 appears in more than one file"):
        import_auctionnet([a, b], tmp_path / "out", None)
    assert not (tmp_path / "out").exists()


def test_errors_in_a_later_chunk_name_the_file_line(frame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = frame.copy()
    bad.loc[150, "budget"] = -1.0
    bad.to_csv(path := tmp_path / "t.csv", index=False)
    monkeypatch.setattr(importer, "CSV_BLOCK_BYTES", 4096)
    with pytest.raises(DataError, match=rf"{path}: line 152: field 'budget': -1.0; expected a budget > 0"):
        import_auctionnet([path], tmp_path / "out", None)


# ----------------------------------------------------------------------------- generator


def test_the_generator_writes_the_dataset_of_the_whole_frame_path(tmp_path: Path) -> None:
    cfg = VamoConfig(sim=SMALL, train_days=2, seed=3)
    make_data(cfg, tmp_path / "streamed")
    lp = lp_table(cfg.sim, cfg.seed)
    frame = pd.concat([log_day(cfg.sim, cfg.seed, d, cfg.explore, lp) for d in range(1, 5)], ignore_index=True)
    splits, info = whole_frame(frame, _states(frame))
    assert_same_dataset(tmp_path / "streamed", splits, info)
    write_dataset(tmp_path / "whole", splits, source="vamo-simulator", seed=cfg.seed)
    assert read_dataset(tmp_path / "streamed").manifest["content_hash"] == \
        read_dataset(tmp_path / "whole").manifest["content_hash"]


# ----------------------------------------------------------------------------- the streaming read


@pytest.fixture(scope="module")
def cut(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A generated dataset, and the same rows rewritten in 11-row row groups and 53-row files:
    trajectories cut across row groups and files everywhere."""
    root = tmp_path_factory.mktemp("vamo-cut")
    make_data(VamoConfig(sim=SMALL, train_days=3, seed=1), root / "data")
    ds = read_dataset(root / "data")
    with DatasetWriter(root / "cut", source="cut", part_rows=53, row_group_rows=11) as w:
        for split in ds.splits:
            w.write(split, ds.read(split))
        w.close(ds.meta)
    return root / "data", root / "cut"


def _cfg() -> VamoConfig:
    return VamoConfig(sim=SMALL, train_days=3, seed=1, context=4, history=3, top_k=1)


def _meta(data: Path, cfg: VamoConfig) -> dict:
    from workloads.vamo.train import spec_meta

    return spec_meta(data, cfg)


def test_every_trajectory_is_read_once_whole_wherever_files_and_row_groups_cut(cut) -> None:
    _, data = cut
    ds = read_dataset(data)
    units = stream.units(ds, "train")
    assert len({name for name, _ in units}) >= 3 and len(units) > 10
    rows = pd.concat([stream.unit_rows(ds, units, i) for i in range(len(units))], ignore_index=True)
    pd.testing.assert_frame_equal(rows, ds.read("train", columns=stream.READ_COLUMNS))


@pytest.mark.parametrize("tasks", [None, (2,)])
def test_the_read_gives_the_in_memory_windows_in_order_or_shuffled(cut, tasks) -> None:
    whole, data = cut
    cfg = _cfg()
    meta = _meta(whole, cfg)
    want = load_windows(whole, "train", cfg, tasks)
    ds = read_dataset(data)
    units = stream.units(ds, "train")
    for seed in (None, 5):
        blocks = [b for i in range(len(units)) for b in stream._read_units(
            {"unit": np.array([i])}, ds=ds, all_units=units, steps=meta["max_steps"], context=cfg.context,
            history=cfg.history, rtg_scale=meta["rtg_scale"], tasks=tasks, seed=seed)]
        got = {k: np.concatenate([b[k] for b in blocks]) for k in want}
        assert len(got["task"]) == len(want["task"]) == stream.stream_rows(data, cfg, meta, tasks)
        if seed is None:
            for k in want:
                np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        else:  # the same windows, in another order
            assert not np.array_equal(got["step"], want["step"])
            for k in want:
                np.testing.assert_array_equal(got[k][_order(got)], want[k][_order(want)], err_msg=k)


def _order(w: dict[str, np.ndarray]) -> np.ndarray:
    """An order of windows by their contents."""
    cols = np.concatenate([w["ext"].reshape(len(w["ext"]), -1), w["rtg"], w["target"], w["prev_action"],
                           w["step"], w["task"][:, None]], 1)
    return np.lexsort(cols.T[::-1])


def test_validation_arrays_and_window_counts_without_the_manifest_record(cut, tmp_path: Path) -> None:
    whole, data = cut
    cfg = _cfg()
    meta = _meta(whole, cfg)
    for tasks in (None, (0,), (1, 2)):
        want = load_windows(whole, "val", cfg, tasks)
        got = stream.stream_eval(data, "val", cfg, meta, 0, tasks)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    capped = stream.stream_eval(data, "val", cfg, meta, 40)
    assert 0 < len(capped["task"]) <= 40
    ds = read_dataset(whole)  # a dataset written before trajectory_lengths was recorded: the counts are scanned
    old = dataclasses.replace(ds, manifest={**ds.manifest, "meta": {k: v for k, v in ds.meta.items()
                                                                    if k != "trajectory_lengths"}})
    for tasks in (None, (2,)):
        assert stream.stream_rows(old, cfg, meta, tasks) == stream.stream_rows(ds, cfg, meta, tasks) == \
            len(load_windows(whole, "train", cfg, tasks)["task"])


def test_the_meta_sample_is_bounded_whole_trajectories(cut, monkeypatch: pytest.MonkeyPatch) -> None:
    whole, data = cut
    full = load_split(whole, "train")
    monkeypatch.setattr(stream, "META_SAMPLE_ROWS", 60)
    sample = stream.train_sample(data, seed=0)
    again = stream.train_sample(data, seed=0)
    assert all(np.array_equal(v, again[k]) for k, v in sample.items())  # seeded
    rows = int(sample["length"].sum())
    assert 60 <= rows < 60 + 11 + 2 * SMALL.steps and len(sample["task"]) < len(full["task"])
    assert (sample["valid"].sum(1) == sample["length"]).all() and sample["valid"][:, 0].all()  # whole, from step 0
    monkeypatch.setattr(stream, "META_SAMPLE_ROWS", 10**9)
    for k, v in stream.train_sample(data, seed=0).items():  # a split within the bound: read whole, as before
        np.testing.assert_array_equal(v, full[k])
