"""MTORL's importers and generator stream (bounded memory): the same dataset whatever the chunk and
partition sizes and the file order, the same sequences as the whole-frame path, the seeded user
split's rule, the reward envelope recorded at write time, errors naming the file row in later chunks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adray.data import DataError, read_dataset, write_dataset
from workloads.mtorl import data as mdata
from workloads.mtorl import sequences
from workloads.mtorl.config import MTORLConfig, SimConfig
from workloads.mtorl.data import (
    KUAIRAND_STATIC,
    import_criteo,
    import_kuairand,
    make_data,
    read_sequences,
    reward_range,
)
from workloads.mtorl.sequences import RewardEnvelope, UserSplit, envelope_range, user_keys
from workloads.mtorl.sim import simulate_logs

SPLITS = ("train", "val", "test")
CRITEO = MTORLConfig(source="criteo", gain="both", reward_type="multiclass", n=4)


def criteo_csv(path: Path, users: int = 80, seed: int = 0) -> pd.DataFrame:
    """Criteo-sequence layout, users interleaved in time order (as released)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in rng.permutation(users):
        for _ in range(int(rng.integers(1, 9))):
            ch, click = int(rng.integers(0, 5)), float(rng.random() < 0.4)
            rows.append({"uid": int(u) * 7 + 3, "campaign": 7, "conversion": float(click and rng.random() < 0.5),
                         "attribution": 0, "click": click, "click_nb": 0, "cost": round(float(rng.random()), 4),
                         "cpo": 1.0, **{f"cat{i}": float(rng.integers(0, 50)) for i in range(1, 10)},
                         **{f"Type_{k}": float(k == ch) for k in range(5)}})
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)  # interleave users
    df.to_csv(path)  # with the unnamed index column, like the release
    return df


def kuairand_csv(path: Path, users: int = 50, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for _ in range(int(rng.integers(1, 12))):
            a = int(rng.integers(0, 3))
            rows.append({"user_id": u, "hourmin": round(float(rng.random()), 4), "time_ms": int(rng.integers(0, 30)),
                         "is_click": int(rng.random() < 0.3), "short": int(a == 0), "mid": int(a == 1),
                         "long": int(a == 2), **{c: float(rng.integers(0, 2)) for c in KUAIRAND_STATIC}})
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)  # any order, time ties
    df.to_csv(path, index=False)
    return df


def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many CSV chunks and many user partitions (the external grouping path)."""
    monkeypatch.setattr(mdata, "CSV_BLOCK_BYTES", 4096)
    monkeypatch.setattr(sequences, "PARTITION_ROWS", 40)


def content_hash(path: Path) -> str:
    return read_dataset(path).manifest["content_hash"]


def all_users(path: Path, cfg: MTORLConfig) -> pd.DataFrame:
    return pd.concat([read_sequences(path, s, cfg)[0] for s in SPLITS]).sort_values("user_id").reset_index(drop=True)


@pytest.mark.parametrize("fmt", ["criteo", "kuairand"])
def test_small_chunks_and_partitions_give_the_same_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           fmt: str) -> None:
    make, importer, cfg = {"criteo": (criteo_csv, import_criteo, CRITEO),
                           "kuairand": (kuairand_csv, import_kuairand, MTORLConfig(source="kuairand"))}[fmt]
    make(tmp_path / "in.csv")
    monkeypatch.setattr(sequences, "USER_ROW_GROUP_ROWS", 7)  # row groups cut across partitions
    importer([tmp_path / "in.csv"], tmp_path / "whole", cfg)  # one chunk, one partition
    with monkeypatch.context() as m:
        small_blocks(m)
        importer([tmp_path / "in.csv"], tmp_path / "streamed", cfg)
    assert content_hash(tmp_path / "whole") == content_hash(tmp_path / "streamed")
    assert read_dataset(tmp_path / "whole").file_stats("train")[0]["row_groups"] > 3
    assert read_dataset(tmp_path / "whole").meta == read_dataset(tmp_path / "streamed").meta


def test_criteo_sequences_are_the_whole_frame_sort_of_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the whole-frame importer built: a stable sort by uid (file = time order), q = the kept
    cat columns min-max scaled over the file; users with < min_len steps dropped."""
    raw = criteo_csv(tmp_path / "c.csv")
    cfg = CRITEO.override({"min_len": 2})
    small_blocks(monkeypatch)
    import_criteo([tmp_path / "c.csv"], tmp_path / "ds", cfg)
    got = all_users(tmp_path / "ds", cfg)
    kept = read_dataset(tmp_path / "ds").meta["q_columns"]
    cats = raw[kept].to_numpy(float)
    q = (cats - cats.min(0)) / np.maximum(cats.max(0) - cats.min(0), 1e-12)
    types = [f"Type_{k}" for k in range(5)]
    want = raw.assign(_row=np.arange(len(raw))).sort_values("uid", kind="stable")
    groups = {u: g for u, g in want.groupby("uid", sort=True) if len(g) >= 2}
    assert list(got["user_id"]) == list(groups)
    for (_, row), g in zip(got.iterrows(), groups.values()):
        assert list(row["action"]) == list(g[types].to_numpy().argmax(1))
        assert np.allclose(row["gain"], g["click"] + 10 * g["conversion"])
        assert np.allclose(row["cost"], g["cost"])
        assert np.allclose(np.asarray(row["q"]).reshape(-1, len(kept)), q[g["_row"].to_numpy()])
        assert len(row["f"]) == 0


def test_kuairand_orders_each_user_by_time_then_file_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = kuairand_csv(tmp_path / "k.csv")
    cfg = MTORLConfig(source="kuairand")
    small_blocks(monkeypatch)
    import_kuairand([tmp_path / "k.csv"], tmp_path / "ds", cfg)
    got = all_users(tmp_path / "ds", cfg)
    want = raw.sort_values(["user_id", "time_ms"], kind="stable")
    assert got["length"].sum() == len(raw)
    for (_, row), (_, g) in zip(got.iterrows(), want.groupby("user_id", sort=True)):
        assert list(row["action"]) == list(g[["short", "mid", "long"]].to_numpy().argmax(1))
        assert np.allclose(np.asarray(row["q"]).reshape(-1, 2), g[["hourmin", "time_ms"]].to_numpy())
        assert np.allclose(row["f"], g[list(KUAIRAND_STATIC)].to_numpy()[0])


def test_user_split_rule_sizes_and_independence_of_blocks() -> None:
    """train = the round(0.8 U) users of smallest seeded key, val the next round(0.1 U), test the rest;
    found in two bounded passes whatever the blocks (here enough users to share key buckets)."""
    users = np.random.default_rng(0).choice(10**9, 150_001, replace=False)
    keys = user_keys(users, 5)
    assert len(np.unique(keys)) == len(users)  # a bijection: no ties
    blocks = np.array_split(np.random.default_rng(1).permutation(keys), 7)
    split = UserSplit(lambda: iter(blocks), (0.8, 0.1, 0.1))
    rank = np.empty(len(keys), np.int64)
    rank[np.argsort(keys)] = np.arange(len(keys))
    cut1, cut2 = round(0.8 * len(keys)), round(0.8 * len(keys)) + round(0.1 * len(keys))
    assert np.array_equal(split.labels(keys), (rank >= cut1).astype(np.int8) + (rank >= cut2))
    assert split.sizes == {"train": cut1, "val": cut2 - cut1, "test": len(keys) - cut2}
    assert not np.array_equal(user_keys(users, 6), keys)  # the seed moves users


def test_imported_splits_follow_the_rule(tmp_path: Path) -> None:
    criteo_csv(tmp_path / "c.csv", users=120)
    import_criteo([tmp_path / "c.csv"], tmp_path / "ds", CRITEO)
    users = all_users(tmp_path / "ds", CRITEO)["user_id"].to_numpy()
    keys = np.sort(user_keys(users, CRITEO.seed))
    cut1, cut2 = round(0.8 * len(users)), round(0.8 * len(users)) + round(0.1 * len(users))
    for name, (lo, hi) in zip(SPLITS, [(0, cut1), (cut1, cut2), (cut2, len(users))]):
        split = read_sequences(tmp_path / "ds", name, CRITEO)[0]
        assert sorted(user_keys(split["user_id"].to_numpy(), CRITEO.seed)) == list(keys[lo:hi])
        assert split["user_id"].is_monotonic_increasing  # stored in user order, as before
    assert read_dataset(tmp_path / "ds").meta["split"]["users"] == {"train": cut1, "val": cut2 - cut1,
                                                                    "test": len(users) - cut2}


def test_reward_range_from_the_recorded_envelope_equals_the_whole_split(tmp_path: Path) -> None:
    """The envelope recorded at write time gives, for any s, exactly the min/max of g - s*w over the
    train split (as the streamed fallback and the whole-split computation do)."""
    criteo_csv(tmp_path / "c.csv")
    import_criteo([tmp_path / "c.csv"], tmp_path / "ds", CRITEO)
    train = read_sequences(tmp_path / "ds", "train", CRITEO)[0]
    ds = read_dataset(tmp_path / "ds")
    assert ds.meta["reward_envelope"]["steps"] == train["length"].sum()
    bare = tmp_path / "bare"  # the same rows without the envelope: the streamed path
    write_dataset(bare, {s: ds.read(s) for s in SPLITS}, source="criteo",
                  meta={k: v for k, v in ds.meta.items() if k != "reward_envelope"})
    for s in (0.0, CRITEO.penalty_s, 2.0, 37.5):
        raw = np.concatenate(list(train["gain"])) - s * np.concatenate(list(train["cost"]))
        cfg = CRITEO.override({"penalty_s": s})
        assert reward_range(tmp_path / "ds", cfg) == reward_range(bare, cfg) == (raw.min(), raw.max())


def test_reward_envelope_blocks_on_continuous_gains() -> None:
    rng = np.random.default_rng(0)
    g, w = rng.normal(size=50_000), rng.random(50_000)
    env = RewardEnvelope()
    for block in np.array_split(np.arange(len(g)), 9):
        env.add(g[block], w[block])
    assert env.size() < 200
    for s in (0.0, 0.3, 4.0):
        assert envelope_range(env.meta(), s) == ((g - s * w).min(), (g - s * w).max())


def test_a_bad_value_in_a_later_chunk_names_its_file_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = criteo_csv(tmp_path / "c.csv")
    row = len(raw) - 5
    raw.loc[row, "click"] = 3.0
    raw.to_csv(tmp_path / "bad.csv")
    small_blocks(monkeypatch)
    with pytest.raises(DataError, match=rf"bad.csv: row {row}: field 'click': 3.0; expected 0 or 1"):
        import_criteo([tmp_path / "bad.csv"], tmp_path / "out", CRITEO)
    raw.loc[row, "click"] = 1.0
    raw.loc[row, ["Type_0", "Type_1"]] = 1.0
    raw.to_csv(tmp_path / "bad2.csv")
    with pytest.raises(DataError, match=rf"bad2.csv: row {row}: columns Type_0..Type_4 must be one-hot"):
        import_criteo([tmp_path / "bad2.csv"], tmp_path / "out", CRITEO)
    assert not (tmp_path / "out").exists()


def _digest(df: pd.DataFrame) -> str:
    h = hashlib.sha256(df["user_id"].to_numpy(np.int64).tobytes())
    h.update(df["length"].to_numpy(np.int64).tobytes())
    for c in ("action", "gain", "gain_cls", "cost", "q", "f"):
        h.update(np.concatenate([np.asarray(x, np.float64) for x in df[c]]).tobytes())
    return h.hexdigest()[:16]


def test_simulator_logs_are_those_of_the_one_population_simulator(tmp_path: Path) -> None:
    """Snapshot: up to sim.BLOCK_STEPS steps the generator makes exactly the sequences the whole-frame
    generator made (digest taken from it before the streaming rewrite); beyond, blocks of users each
    seeded on its own, user ids contiguous."""
    cfg = MTORLConfig(sim=SimConfig(num_users=300, steps=7), seed=3)
    make_data(cfg, tmp_path / "ds")
    assert _digest(all_users(tmp_path / "ds", cfg)) == "c5196ad333897cee"
    blocks = list(simulate_logs(cfg.sim, 3, block_steps=7 * 128))
    assert [b.num_rows for b in blocks] == [128, 128, 44]
    ids = np.concatenate([b.column("user_id").to_numpy() for b in blocks])
    assert np.array_equal(ids, np.arange(300)) and all(set(b.column("length").to_numpy()) == {7} for b in blocks)
    again = list(simulate_logs(cfg.sim, 3, block_steps=7 * 128))
    assert all(a.equals(b) for a, b in zip(blocks, again))


def test_real_kuairand_sample_sequences_unchanged(samples: Path, tmp_path: Path) -> None:
    """Snapshot of the whole-frame importer's sequences of the shipped KuaiRand file (all splits)."""
    cfg = MTORLConfig(source="kuairand")
    import_kuairand([samples / "kuairand_sequence.zip"], tmp_path / "ds", cfg)
    assert _digest(all_users(tmp_path / "ds", cfg)) == "15812c790a9e90d5"
