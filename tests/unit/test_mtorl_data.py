"""MTORL importers, user splits and windowing; the journey simulator's invariants; Algorithm 1 pieces."""

import numpy as np
import pandas as pd
import pytest
import torch

from adray.data import DataError
from workloads.mtorl.config import MTORLConfig, SimConfig
from workloads.mtorl.data import (
    KUAIRAND_STATIC,
    import_criteo,
    import_kuairand,
    load_split,
    make_data,
    read_sequences,
    reference_windows,
)
from workloads.mtorl.model import MTORLNet
from workloads.mtorl.online import Memory, channel_ratios, run_procedure
from workloads.mtorl.sim import JourneySim


def kuairand_csv(path, users=20, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for t in range(int(rng.integers(3, 12))):
            a = int(rng.integers(0, 3))
            rows.append({"user_id": float(u), "hourmin": rng.random(), "time_ms": t / 20 + u / 1000,
                         "is_click": float(rng.random() < 0.3), "short": float(a == 0), "mid": float(a == 1),
                         "long": float(a == 2), **{c: float(u % 2) for c in KUAIRAND_STATIC}})
    pd.DataFrame(rows).to_csv(path)
    return pd.DataFrame(rows)


def test_kuairand_import_splits_users_and_windows_pad_and_truncate(tmp_path):
    raw = kuairand_csv(tmp_path / "k.csv")
    cfg = MTORLConfig(source="kuairand", n=6)
    import_kuairand([tmp_path / "k.csv"], tmp_path / "ds", cfg)
    users = [set(read_sequences(tmp_path / "ds", s, cfg)[0]["user_id"]) for s in ("train", "val", "test")]
    assert sum(map(len, users)) == 20 and not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])
    arr = load_split(tmp_path / "ds", "train", cfg)
    seqs = read_sequences(tmp_path / "ds", "train", cfg)[0]
    for i, row in seqs.iterrows():
        mine = raw[raw.user_id == row["user_id"]]
        k = min(len(mine), 6)
        assert arr["mask"][i].sum() == k and (arr["mask"][i, k:] == 0).all()
        want = mine[["short", "mid", "long"]].to_numpy().argmax(1)[-k:]  # truncate keeps the last n
        assert (arr["action"][i, :k] == want).all()
        assert np.allclose(arr["reward"][i, :k], mine["is_click"].to_numpy()[-k:])  # no cost: r = g
        assert np.allclose(arr["state"][i, :k, 0], mine["hourmin"].to_numpy()[-k:])
    assert arr["state"].shape[-1] == 2 + len(KUAIRAND_STATIC)


def test_kuairand_import_rejects_bad_input(tmp_path):
    raw = kuairand_csv(tmp_path / "k.csv")
    raw.drop(columns=["mid"]).to_csv(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="mid"):
        import_kuairand([tmp_path / "bad.csv"], tmp_path / "ds", MTORLConfig(source="kuairand"))
    raw.loc[3, "short"] = 1.0
    raw.loc[3, "mid"] = 1.0
    raw.to_csv(tmp_path / "bad2.csv")
    with pytest.raises(DataError, match="one-hot"):
        import_kuairand([tmp_path / "bad2.csv"], tmp_path / "ds", MTORLConfig(source="kuairand"))


def test_criteo_import_gain_cost_and_channels(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for u in range(30):
        for _ in range(int(rng.integers(2, 6))):
            ch = int(rng.integers(0, 11))
            click = float(rng.random() < 0.4)
            rows.append({"uid": u, "campaign": 7, "conversion": float(click and rng.random() < 0.5),
                         "attribution": 0, "click": click, "click_nb": 0, "cost": float(rng.random()), "cpo": 1.0,
                         **{f"cat{i}": float(rng.integers(0, 50)) for i in range(1, 10)},
                         **{f"Type_{k}": float(k == ch) for k in range(11)}})
    df = pd.DataFrame(rows)
    df.to_csv(tmp_path / "c.csv", index=False)
    cfg = MTORLConfig(source="criteo", gain="both", reward_type="multiclass", n=4)
    import_criteo([tmp_path / "c.csv"], tmp_path / "ds", cfg)
    seqs = pd.concat([read_sequences(tmp_path / "ds", s, cfg)[0] for s in ("train", "val", "test")])
    assert seqs["length"].sum() == len(df)
    one = seqs.sort_values("user_id").iloc[0]
    mine = df[df.uid == one["user_id"]]
    assert list(one["action"]) == list(mine[[f"Type_{k}" for k in range(11)]].to_numpy().argmax(1))
    assert np.allclose(one["gain"], mine["click"] + 10 * mine["conversion"])
    assert list(one["gain_cls"]) == list(np.where(mine["conversion"] > 0, 2, np.where(mine["click"] > 0, 1, 0)))
    assert np.allclose(one["cost"], mine["cost"])
    arr = load_split(tmp_path / "ds", "train", cfg)
    valid = arr["mask"] > 0
    assert arr["reward"][valid].min() >= 0 and arr["reward"][valid].max() <= 1  # MinMaxNorm(g - s*w)


def test_reference_protocol_samples_windows_from_long_users_across_splits(tmp_path):
    kuairand_csv(tmp_path / "k.csv", users=40)
    cfg = MTORLConfig(source="kuairand", n=5, protocol="reference", ref_windows=50)
    import_kuairand([tmp_path / "k.csv"], tmp_path / "ds", cfg)
    parts = [load_split(tmp_path / "ds", s, cfg) for s in ("train", "val", "test")]
    assert [len(p["action"]) for p in parts] == [40, 5, 5]
    assert all((p["mask"] == 1).all() for p in parts)  # users with >= n+1 steps: no padding
    again = load_split(tmp_path / "ds", "test", cfg)
    assert np.array_equal(again["action"], parts[2]["action"])  # seeded
    # the window draws behind load_split: same test windows, the splits partition the draws, and
    # sampling with replacement from 40 users makes test windows repeat train users (the leak)
    seqs, _, rows, starts, take = reference_windows(tmp_path / "ds", cfg)
    assert sorted(np.concatenate(list(take.values())).tolist()) == list(range(50))
    for i, (r, s0) in enumerate(zip(rows[take["test"]], starts[take["test"]])):
        assert seqs.iloc[r]["length"] >= cfg.n + 1
        assert np.array_equal(parts[2]["action"][i], seqs.iloc[r]["action"][s0:s0 + cfg.n])
    assert np.isin(rows[take["test"]], rows[take["train"]]).any()


def test_source_mismatch_is_a_clear_error(tmp_path):
    cfg = MTORLConfig(sim=SimConfig(num_users=30, steps=4))
    make_data(cfg, tmp_path / "ds")
    with pytest.raises(DataError, match="source"):
        load_split(tmp_path / "ds", "train", cfg.override({"source": "kuairand"}))


def test_simulator_is_seeded_and_gains_depend_on_the_journey():
    cfg = SimConfig()
    a, b = JourneySim(cfg, 50, 3), JourneySim(cfg, 50, 3)
    users = np.arange(50)
    acts = np.zeros(50, np.int64)
    ga, wa = a.step(users, acts)
    gb, _ = b.step(users, acts)
    assert np.array_equal(ga, gb) and np.allclose(wa, cfg.channel_costs[0])
    sim = JourneySim(cfg, 2, 0)
    sim.theta[:] = 0.0
    sim.pref[:] = 0.0
    u = np.array([0, 1])
    sim.recent[0] = 1.0  # user 0 clicked recently; same channel as before is fatigued
    sim.last_action[:] = [2, 2]
    p = sim.click_prob(u, np.array([1, 1]))
    assert p[0] > p[1] == pytest.approx(0.5)
    assert sim.click_prob(u[1:], np.array([2]))[0] < 0.5
    before = sim.pref.copy()
    sim.step(u, np.array([0, 1]))
    assert not np.allclose(before, sim.pref)  # preferences drift
    with pytest.raises(ValueError):
        sim.step(u, np.array([0, 9]))


def test_channel_ratios_and_memory():
    arrays = {"mask": np.ones((1, 4), np.float32), "action": np.array([[0, 0, 1, 1]]),
              "reward": np.array([[1.0, 1.0, 1.0, 0.0]], np.float32)}
    p, p_hat, p0 = channel_ratios(np.array([[0.9, 0.2, 0.8, 0.9]]), arrays, tau=0.5, alpha=0.25, m=2)
    assert np.allclose(p, [2 / 3, 1 / 3]) and np.allclose(p_hat, [1 / 3, 2 / 3])
    assert np.allclose(p0, 0.75 * p + 0.25 * p_hat)
    mem = Memory(2, 3, 1)
    for k in range(4):
        mem.set_pending(np.array([0]), np.array([[float(k)]]))
        mem.push(np.array([0]), np.array([k % 2]), np.array([0.5]))
    assert mem.count[0] == 2 and list(mem.state[0, :2, 0]) == [2.0, 3.0]  # last n-1 steps kept


def test_online_procedure_never_overspends_and_ablations_run():
    cfg = MTORLConfig(n=5, sim=SimConfig(num_users=20, steps=5)).override(
        {"online.num_users": 40, "online.budget": 60.0, "online.rounds": 10, "online.top_n": 10})
    torch.manual_seed(0)
    net = MTORLNet(4, 4 + 1 + 1, d=8).eval()
    p0 = np.full(4, 0.25)
    for rank, ch in [(True, "model"), (False, "model"), (False, "logged"), (False, "random")]:
        out = run_procedure(cfg, net, p0, rank_users=rank, channel=ch, reward_minmax=(-0.7, 1.0), static_dim=1)
        assert 0 < out["spent"] <= 60.0 + 1e-9 and out["exposures"] > 0
        assert 0 <= out["avg_reward"] <= 1


def test_real_kuairand_zip_imports_every_row_and_user(samples, tmp_path):
    path = samples / "kuairand_sequence.zip"  # in the repository: never skipped
    cfg = MTORLConfig(source="kuairand")
    import_kuairand([path], tmp_path / "ds", cfg)
    seqs = pd.concat([read_sequences(tmp_path / "ds", s, cfg)[0] for s in ("train", "val", "test")])
    assert len(seqs) == 6051 and seqs["length"].sum() == 126184
    arr = load_split(tmp_path / "ds", "val", cfg)
    assert arr["action"].shape == (605, 20)


def test_online_reward_is_an_evaluation_never_a_validation_metric(tmp_path):
    """Algorithm 1 against the simulator is reported by ``adray eval`` (``test_online_reward``) and
    never by ``evaluate``, which the epoch loop (best epoch) and Tune read (issue 19)."""
    from adray.config import ConfigError
    from workloads.mtorl.data import reward_range
    from workloads.mtorl.evaluate import evaluate, evaluate_methods, online_reward, outputs

    cfg = MTORLConfig(n=5, d_model=8, online_eval=True, sim=SimConfig(num_users=30, steps=6)).override(
        {"online.num_users": 40, "online.budget": 60.0, "online.rounds": 10, "online.top_n": 10})
    make_data(cfg, tmp_path)
    train = load_split(tmp_path, "train", cfg)
    lo, hi = reward_range(tmp_path, cfg)
    assert np.allclose(train["reward_minmax"], np.float32([lo, hi]))  # every window carries the MinMaxNorm bounds
    torch.manual_seed(0)
    net = MTORLNet(4, 4 + 1 + 1, d=8)  # left in train mode: online_reward must switch dropout off itself
    assert not [k for k in evaluate(net, load_split(tmp_path, "val", cfg), cfg) if "online" in k]
    got = online_reward(net, train, cfg)
    assert net.training
    _, r_hat = outputs(net, train)
    _, _, p0 = channel_ratios(r_hat, train, cfg.online.tau, cfg.online.alpha, 4)
    direct = run_procedure(cfg, net.eval(), p0, rank_users=True, channel="model",
                           reward_minmax=(float(np.float32(lo)), float(np.float32(hi))), static_dim=1)
    assert got == pytest.approx(direct["avg_reward"])
    table = evaluate_methods(cfg, tmp_path, net.train())
    assert table["mtorl"]["test_online_reward"] == pytest.approx(got)  # P_initial from the train split's logs
    assert "test_online_reward" not in evaluate_methods(cfg.override({"online_eval": False}), tmp_path, net)["mtorl"]
    with pytest.raises(ConfigError, match="online_eval=true needs source=simulator"):
        MTORLConfig(source="kuairand", online_eval=True)
