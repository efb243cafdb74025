"""adray.rl's streaming sampler over Parquet row groups (no Ray): the buffer bound, every row
reachable once an epoch, seeded determinism, the same sampler interface as the in-memory one, and
the errors for odd schemas and damaged row groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from adray import rl
from adray.data import DataError


def _write(path: Path, first: int, n: int, row_group: int, width: int = 3, obs_type: pa.DataType = pa.float32(),
           ) -> str:
    ids = np.arange(first, first + n)
    obs = np.repeat(ids[:, None], width, 1).astype(np.float64)
    pq.write_table(pa.table({
        "id": pa.array(ids),
        "obs": pa.array(list(obs), type=pa.list_(obs_type)),
        "r": pa.array(ids * 0.5),
    }), path, row_group_size=row_group)
    return str(path)


@pytest.fixture
def files(tmp_path: Path) -> rl.Files:
    """Two files, 1,000 rows in row groups of 64 (the second file's last group is short)."""
    return pafs.LocalFileSystem(), [_write(tmp_path / "a.parquet", 0, 600, 64),
                                    _write(tmp_path / "b.parquet", 600, 400, 64)]


def _ids(sampler: rl.StreamSampler | rl.TransitionSampler, n: int, batch: int) -> np.ndarray:
    return np.concatenate([sampler.sample(batch)["id"] for _ in range(n // batch)])


def test_every_row_once_an_epoch_and_the_buffer_stays_bounded(files: rl.Files) -> None:
    s = rl.StreamSampler(files, ["id", "obs", "r"], seed=1, buffer_rows=128, block_rows=32)
    assert s.slots == 4 and s.file_rows == 1000
    seen, sizes = [], []
    for _ in range(23):  # 1,150 rows: one epoch and some
        b = s.sample(50)
        assert b["obs"].shape == (50, 3) and (b["obs"][:, 0] == b["id"]).all() and (b["r"] == b["id"] * 0.5).all()
        seen.append(b["id"])
        sizes.append(s.size)
    assert max(sizes) <= 128  # never more than buffer_rows rows held
    ids = np.concatenate(seen)
    assert sorted(ids[:1000]) == list(range(1000))  # each row exactly once in the first epoch
    assert len(set(ids[1000:])) == 150  # then the next epoch
    _ids(s, 1000, 50)
    assert s.rows_read >= 2000  # streamed again, not kept: 1,000 rows do not fit 128


def test_minibatches_mix_row_groups_and_files(files: rl.Files) -> None:
    s = rl.StreamSampler(files, ["id"], seed=0, buffer_rows=256, block_rows=64)
    ids = s.sample(64)["id"]
    assert len(np.unique(ids // 64)) >= 3  # rows of several row groups in one minibatch


def test_seeded_determinism(files: rl.Files) -> None:
    a = _ids(rl.StreamSampler(files, ["id"], seed=3, buffer_rows=128, block_rows=32), 1500, 100)
    b = _ids(rl.StreamSampler(files, ["id"], seed=3, buffer_rows=128, block_rows=32), 1500, 100)
    c = _ids(rl.StreamSampler(files, ["id"], seed=4, buffer_rows=128, block_rows=32), 1500, 100)
    assert (a == b).all() and not (a == c).all()


def test_a_split_that_fits_the_buffer_is_read_once(files: rl.Files) -> None:
    s = rl.StreamSampler(files, ["id"], seed=0, buffer_rows=2048, block_rows=64)
    ids = _ids(s, 3000, 100)
    assert s.rows_read == 1000 and s.epoch >= 2
    assert sorted(ids[:1000]) == list(range(1000)) and sorted(ids[1000:2000]) == list(range(1000))


def test_transform_filters_and_the_in_memory_sampler_has_the_same_interface(files: rl.Files) -> None:
    def even(b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep = b["id"] % 2 == 0
        return {"id": b["id"][keep], "x": b["obs"][keep].astype(np.float32)}

    s = rl.StreamSampler(files, ["id", "obs"], even, seed=0, buffer_rows=128, block_rows=32)
    ids = _ids(s, 500, 50)
    assert sorted(ids) == list(range(0, 1000, 2))
    old = rl.IN_MEMORY_MAX_ROWS
    try:
        rl.IN_MEMORY_MAX_ROWS = 10_000
        mem = rl.transition_sampler(files, ["id", "obs"], even, seed=0)
        assert isinstance(mem, rl.TransitionSampler) and mem.size == 500
        b = mem.sample(40)
        assert set(b) == {"id", "x"} and b["x"].shape == (40, 3) and (b["id"] % 2 == 0).all()
    finally:
        rl.IN_MEMORY_MAX_ROWS = old
    # by default a split that fits the buffer is sampled in memory, a larger one streams
    assert isinstance(rl.transition_sampler(files, ["id"], seed=0, buffer_rows=1000), rl.TransitionSampler)
    assert isinstance(rl.transition_sampler(files, ["id"], seed=0, buffer_rows=999), rl.StreamSampler)


def test_statistically_equivalent_to_the_in_memory_sampler(files: rl.Files) -> None:
    """Both draw each row uniformly: the mean of r over many minibatches agrees (with replacement vs
    without: the same expectation, 249.75, and a standard error of ~0.9 over 20,000 draws)."""
    stream = rl.StreamSampler(files, ["r"], seed=0, buffer_rows=128, block_rows=32)
    mem = rl.TransitionSampler(next(iter([{"r": np.arange(1000) * 0.5}])), seed=0)
    for s in (stream, mem):
        r = np.concatenate([s.sample(100)["r"] for _ in range(200)])
        assert r.mean() == pytest.approx(249.75, abs=4.0)


def test_files_with_different_schemas_are_named(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.parquet", 0, 10, 5)
    b = _write(tmp_path / "b.parquet", 10, 10, 5, obs_type=pa.float64())
    with pytest.raises(DataError, match=r"b\.parquet: field 'obs' has type list<.*double>, but .*a\.parquet has"):
        rl.StreamSampler((pafs.LocalFileSystem(), [a, b]), ["id", "obs"])
    pq.write_table(pa.table({"id": pa.array([1, 2])}), tmp_path / "c.parquet")
    with pytest.raises(DataError, match=r"c\.parquet: missing field\(s\) \['obs'\]"):
        rl.open_split((pafs.LocalFileSystem(), [a, str(tmp_path / "c.parquet")]), ["id", "obs"])


def test_ragged_list_column_names_file_row_group_and_field(tmp_path: Path) -> None:
    path = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"obs": pa.array([[1.0, 2.0]] * 6 + [[1.0]] + [[1.0, 2.0]])}), path, row_group_size=4)
    s = rl.StreamSampler((pafs.LocalFileSystem(), [str(path)]), ["obs"], seed=0, buffer_rows=4, block_rows=4)
    with pytest.raises(DataError, match=r"ragged\.parquet: row group 1: field 'obs' row 2: 1 values"):
        for _ in range(4):
            s.sample(4)


def test_a_row_group_that_fails_to_decode_mid_training_is_named(tmp_path: Path) -> None:
    path = tmp_path / "damaged.parquet"
    _write(path, 0, 4000, 1000, width=8)
    meta = pq.ParquetFile(path).metadata
    col = meta.row_group(2).column(1)  # obs of row group 2
    raw = bytearray(path.read_bytes())
    start = col.data_page_offset
    raw[start + 20:start + 2000] = bytes(1980)  # zero the middle of its first data page
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"damaged\.parquet: row group 2: cannot be decoded"):
        s = rl.StreamSampler((pafs.LocalFileSystem(), [str(path)]), ["id", "obs"], seed=0, buffer_rows=1000,
                             block_rows=1000)  # (the first row group is read here)
        for _ in range(20):
            s.sample(500)


def test_no_file_and_nothing_left_are_errors(files: rl.Files) -> None:
    with pytest.raises(DataError, match="no Parquet file"):
        rl.StreamSampler((pafs.LocalFileSystem(), []), ["id"])
    with pytest.raises(DataError, match="none left after filtering"):
        rl.StreamSampler(files, ["id"], lambda b: {"id": b["id"][:0]})


def test_crossdqn_held_out_rows_stream_from_several_files_and_are_bounded(tmp_path: Path) -> None:
    """The learner's and the estimates' split from the ids alone (one streamed pass) is the masks'
    split; HeldOut reads the same rows from two files as from one, and at most held_out_episodes."""
    from workloads.crossdqn.config import CrossDQNConfig, FeedSimConfig
    from workloads.crossdqn.selection import HeldOut, dataset_held_out, split_masks
    from workloads.crossdqn.sim import obs_layout

    cfg = CrossDQNConfig(sim=FeedSimConfig(slots=3, n_ads=3, n_organic=3, hist_len=2, item_dim=2), embed_dim=4,
                         hidden=8, use_mcau=False)
    dim = obs_layout(cfg.sim)["obs_dim"]
    eps = np.repeat(np.arange(300), 3)
    n = len(eps)
    rng = np.random.default_rng(0)
    table = pa.table({"obs": pa.array(list(rng.normal(size=(n, dim)).astype(np.float32))),
                      "new_obs": pa.array(list(rng.normal(size=(n, dim)).astype(np.float32))),
                      "actions": rng.integers(0, 8, n), "r_ad": rng.random(n), "r_fee": rng.random(n),
                      "r_ex": rng.random(n), "terminateds": np.tile([False, False, True], 300),
                      "action_prob": np.full(n, 0.125), "eps_id": eps, "t": np.tile(np.arange(3), 300)})
    pq.write_table(table, tmp_path / "one.parquet", row_group_size=100)
    pq.write_table(table.slice(0, 400), tmp_path / "a.parquet", row_group_size=64)
    pq.write_table(table.slice(400), tmp_path / "b.parquet", row_group_size=64)
    two = (pafs.LocalFileSystem(), [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")])
    val, test = split_masks(eps, cfg.val_fraction, cfg.test_fraction)
    val_ids, test_ids = dataset_held_out(cfg, two)
    assert set(val_ids) == set(eps[val]) and set(test_ids) == set(eps[test])
    one = HeldOut.load(cfg, tmp_path / "one.parquet", "test")
    split = HeldOut.load(cfg, two, "test")
    assert (one.eps_id == eps[test]).all() and (split.eps_id == one.eps_id).all() and (split.obs == one.obs).all()
    capped = HeldOut.load(cfg.override({"held_out_episodes": 7}), two)
    assert len(np.unique(capped.eps_id)) == 7 and set(capped.eps_id) <= set(val_ids) and len(capped) == 21
