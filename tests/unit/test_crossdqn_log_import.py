"""Cross DQN from the serving graph's decision log (no Ray): outcomes of a rebuilt screen against
hand-computed values, the ``crossdqn-log`` importer (make_data's columns; bad input named by file
and field), the ε-greedy allocation policy's propensities, and the graph logging them."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adray import rl
from adray.data import DataError, read_dataset
from serve_apps.feed_graph import FeedGraph, GraphSettings
from serve_apps.feed_log import log_schema
from tests.helpers import crossdqn_module
from workloads.crossdqn import WORKLOAD
from workloads.crossdqn.config import CrossDQNConfig, FeedSimConfig
from workloads.crossdqn.data import check_dataset, import_decision_log, make_data
from workloads.crossdqn.learner import LOGGED
from workloads.crossdqn.model import CrossDQNModule
from workloads.crossdqn.outcomes import CVR_PRIOR, fill_outcomes, rebuild
from workloads.crossdqn.rollout import q_policy
from workloads.crossdqn.serving import AllocationPolicy, requests_from_obs
from workloads.crossdqn.sim import FeedSim, make_requests, obs_layout
from workloads.crossdqn.train import model_meta
from workloads.drlput.policy import UtilityPolicy

LOG_SCHEMA_ = log_schema(UtilityPolicy)

# ----------------------------------------------------------------------------- outcomes, by hand

# K = 2 slots, D = 2; the user-dependent arrangement, ad-CTR and ad-relevance effects off so that
# every probability is a short hand computation (position, top/adjacent penalties, lift stay on).
HAND = FeedSimConfig(slots=2, item_dim=2, hist_len=2, n_ads=2, n_organic=2, neighbour_similarity=0.0,
                     arrangement_tol_gain=0.0, tol_ctr_gain=0.0, ad_leave_relevance=0.0)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _hand_obs() -> np.ndarray:
    """Three screens: [profile 4 | history 2x2 | ads 2x5 | organic 2x5 | context 4], items [c0, c1, value/5, bid, present]."""
    profile = [0.7, 0.4, 0.0, 1.0]  # tolerance shown 0.7, activity 0.4
    hist = [0.8, 0.0, 0.0, 0.6]  # mean (0.4, 0.3) -> pref (0.8, 0.6)
    ad0, ad1 = [1.0, 0.0, 0.5, 0.6, 1.0], [0.0, 1.0, 1.0, 0.4, 1.0]  # values 2.5, 5.0; bids 0.6, 0.4
    org0, org1 = [0.5, 0.5, 0.2, 0.0, 1.0], [-1.0, 0.0, 0.4, 0.0, 1.0]  # values 1.0, 2.0
    ctx = [0.0, 1.0, 1.0, 0.0]
    rows = [profile + hist + ad0 + ad1 + org0 + org1 + ctx,
            profile + hist + ad0 + [0.0] * 5 + org0 + org1 + ctx,  # one ad left in the list
            profile + [0.0] * 4 + ad0 + ad1 + org0 + org1 + ctx]  # no history: pref 0
    obs = np.array(rows, np.float32)
    assert obs.shape[1] == obs_layout(HAND)["obs_dim"]
    return obs


def test_outcomes_of_rebuilt_screens_match_a_hand_computation() -> None:
    obs, actions = _hand_obs(), np.array([0b01, 0b11, 0b10])  # ad|org, ad|ad (one ad left), org|ad
    sim = rebuild(obs, HAND, seed=3)
    np.testing.assert_allclose(sim.req.pref, [[0.8, 0.6], [0.8, 0.6], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(sim.req.tol, 0.7, atol=1e-6)
    assert sim.ad_ptr.tolist() == [0, 1, 0] and sim.org_ptr.tolist() == [0, 0, 0]  # row 1: its ad sits last
    np.testing.assert_allclose(sim.req.price, [[0.4, 0.05], [0.6, 0.05], [0.4, 0.05]], atol=1e-6)  # GSP, reserve last
    is_ad, item, p, p_leave, _, _ = sim.arrange(np.arange(3), actions)
    assert is_ad.tolist() == [[True, False], [True, False], [False, True]]  # row 1: the ads ran out
    top, lift = 1 - 0.3, 1.15
    expected_p = [[_sig(-1.6 + 0.2 + 0.8) * top, _sig(-1.6 + 0.2 + 0.7 - 0.15) * lift],
                  [_sig(-1.6 + 0.2 + 0.8) * top, _sig(-1.6 + 0.2 + 0.7 - 0.15) * lift],
                  [_sig(-1.6 + 0.2) * lift, _sig(-1.6 + 0.2 - 0.15)]]
    np.testing.assert_allclose(p, expected_p, rtol=1e-6)
    np.testing.assert_allclose(p_leave, 0.12 + 0.15 * 1 * (1 - 0.7), rtol=1e-6)
    price = np.array([[0.4, 0.0], [0.05, 0.0], [0.0, 0.4]])  # row 1 shows the last ad: reserve
    value = np.array([[2.5, 1.0], [2.5, 1.0], [1.0, 2.5]])
    u_click, u_order, u_leave = sim.req.u_click[:, 0], sim.req.u_order[:, 0], sim.req.u_leave[:, 0]
    click = u_click < np.array(expected_p)
    order = click & (u_order < CVR_PRIOR)
    stays = u_leave >= 0.165
    r_ad, r_fee = (click * price).sum(1), 0.1 * (order * value).sum(1)
    r_ex = stays + order.sum(1)
    out = fill_outcomes(obs, actions, HAND, seed=3)
    np.testing.assert_allclose(out["r_ad"], r_ad, rtol=1e-6)
    np.testing.assert_allclose(out["r_fee"], r_fee, rtol=1e-6)
    np.testing.assert_allclose(out["r_ex"], r_ex, rtol=1e-6)
    np.testing.assert_allclose(out["reward"], r_ad + r_fee + 0.3 * r_ex, rtol=1e-6)
    assert out["ads"].tolist() == [1, 1, 1] and out["orders"].tolist() == order.sum(1).tolist()


def test_outcome_means_over_seeds_are_the_hand_expectations() -> None:
    obs = np.repeat(_hand_obs()[:1], 40_000, axis=0)  # row 0, ad|org, fresh uniforms per copy
    out = fill_outcomes(obs, np.full(len(obs), 0b01), HAND, seed=11)
    p_ad, p_org = _sig(-0.6) * 0.7, _sig(-0.85) * 1.15
    expect = {"r_ad": p_ad * 0.4, "r_fee": 0.1 * CVR_PRIOR * (p_ad * 2.5 + p_org * 1.0),
              "r_ex": (1 - 0.165) + CVR_PRIOR * (p_ad + p_org)}
    for key, mean in expect.items():
        se = out[key].std() / math.sqrt(len(obs))
        assert abs(out[key].mean() - mean) < 4 * se, (key, out[key].mean(), mean)
    a = fill_outcomes(obs[:500], np.zeros(500, int), HAND, seed=5)  # common random numbers: same
    b = fill_outcomes(obs[:500], np.zeros(500, int), HAND, seed=5)  # seed and actions, same outcome
    np.testing.assert_array_equal(a["reward"], b["reward"])


def test_rebuild_refuses_screens_it_cannot_play() -> None:
    obs = _hand_obs()
    gap = obs[:1].copy()
    gap[0, 8 + 4] = 0.0  # ad 0 absent, ad 1 present: not a prefix
    with pytest.raises(ValueError, match="ads block's present flags"):
        rebuild(gap, HAND, seed=0)
    empty = obs[1:2].copy()
    empty[0, 18:28] = 0.0  # one ad and no organic item for 2 slots
    with pytest.raises(ValueError, match="1 item"):
        rebuild(empty, HAND, seed=0)
    with pytest.raises(ValueError, match="expected"):
        fill_outcomes(obs, np.array([0, 1, 4]), HAND, seed=0)  # action 4 outside [0, 4)


def test_simulator_screens_get_close_to_the_simulators_own_rewards() -> None:
    cfg = CrossDQNConfig().sim
    req = make_requests(cfg, 4000, 5)
    obs, actions = FeedSim(cfg, req).observe(), np.random.default_rng(0).integers(0, cfg.num_actions, 4000)
    truth = FeedSim(cfg, req).step(np.arange(4000), actions)
    est = fill_outcomes(obs, actions, cfg, seed=1)
    print(f"first screens, random actions: simulator reward {truth['reward'].mean():.4f}, "
          f"rebuilt {est['reward'].mean():.4f}")
    assert (est["ads"] == truth["ads"]).all()  # same lists, same arrangement
    assert abs(est["reward"].mean() - truth["reward"].mean()) < 0.1


# ----------------------------------------------------------------------------- the importer

CFG = CrossDQNConfig(n_requests=40, seed=2)
K = CFG.sim.slots


def _log(path: Path, n: int = 30, fallback: tuple[int, ...] = (), null_obs: tuple[int, ...] = (),
         **override: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A decision-log file (the graph's schema) of ``n`` simulator first screens."""
    obs = FeedSim(CFG.sim, make_requests(CFG.sim, n, 9)).observe()
    rng = np.random.default_rng(1)
    actions, props = rng.integers(0, CFG.num_actions, n), rng.choice([0.9, 0.05], n)
    rows = [{"request_id": f"feed-{i}", "alloc_obs": None if i in null_obs else obs[i].tolist(),
             "alloc_action": -1 if i in fallback else int(actions[i]), "alloc_propensity": float(props[i]),
             "alloc_fallback": i in fallback,
             "model_versions": '{"allocation": "crossdqn@v0001"}' if i not in fallback else "{}"} for i in range(n)]
    table = pa.Table.from_pylist(rows, schema=LOG_SCHEMA_)
    for name, values in override.items():
        table = table.set_column(table.schema.get_field_index(name), name, values)
    pq.write_table(table, path)
    return obs, actions, props


def test_import_writes_make_datas_columns_and_trains_unchanged(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    obs, actions, props = _log(tmp_path / "a.parquet", fallback=(3, 4), null_obs=(7,))
    import_decision_log([tmp_path / "a.parquet"], tmp_path / "d", CFG, simulate_outcomes=True)
    err = capsys.readouterr().err
    assert "27 of 30 row(s) kept; left out: 2 (allocation fell back), 1 (no observation)" in err
    assert "outcomes ['r_ad', 'r_fee', 'r_ex', 'orders'] SIMULATED for 27 of 27 row(s)" in err
    make_data(CFG, tmp_path / "sim")
    ds, sim = read_dataset(tmp_path / "d"), read_dataset(tmp_path / "sim")
    df, ref = ds.read("train"), sim.read("train")
    assert list(df.columns) == list(ref.columns) and dict(df.dtypes) == dict(ref.dtypes)
    assert set(sim.meta) <= set(ds.meta) and ds.meta["obs_layout"] == obs_layout(CFG.sim)
    assert ds.meta["sim"] == CFG.sim.to_dict() and ds.meta["decided_by"] == ["crossdqn@v0001"]
    assert ds.meta["import_options"] == {"simulate_outcomes": True}
    assert ds.meta["filled_in"]["outcomes"]["rows"] == 27 and ds.meta["outcomes"] == {"joined": 0, "simulated": 27}
    keep = np.setdiff1d(np.arange(30), [3, 4, 7])
    cols = rl.read_transitions(check_dataset(CFG, tmp_path / "d"), [*LOGGED, "action_prob"])  # the trainer's read
    np.testing.assert_array_equal(cols["obs"], obs[keep])
    np.testing.assert_array_equal(cols["new_obs"], obs[keep])  # terminal: new_obs = obs
    assert cols["terminateds"].all() and df.eps_id.is_unique and (df.t == 0).all()
    np.testing.assert_array_equal(cols["actions"], actions[keep])
    np.testing.assert_allclose(cols["action_prob"], props[keep], rtol=1e-6)
    expected = fill_outcomes(obs[keep], actions[keep], CFG.sim, seed=CFG.seed)
    for c in ("r_ad", "r_fee", "r_ex"):
        np.testing.assert_allclose(cols[c], expected[c], rtol=1e-6)
    np.testing.assert_allclose(df.rewards, df.r_ad + df.r_fee + CFG.sim.eta * df.r_ex, rtol=1e-5)
    np.testing.assert_allclose(df.pae, expected["ads"] / K, rtol=1e-6)
    # joined outcomes are kept as they are; with the flag, only the rows without them are simulated
    t = pq.read_table(tmp_path / "a.parquet")
    for c, v in (("r_ad", 1.0), ("r_fee", 2.0), ("r_ex", 3.0), ("orders", 4)):
        t = t.append_column(c, pa.array([v] * 30, pa.float64()))
    pq.write_table(t, tmp_path / "b.parquet")
    WORKLOAD.importers["crossdqn-log"]([tmp_path / "b.parquet"], tmp_path / "joined", CFG)  # nothing to simulate
    ds = read_dataset(tmp_path / "joined")
    assert ds.meta["outcomes"] == {"joined": 27, "simulated": 0} and ds.meta["filled_in"] == {}
    assert "SIMULATED" not in capsys.readouterr().err
    WORKLOAD.importers["crossdqn-log"]([tmp_path / "b.parquet", tmp_path / "a.parquet"], tmp_path / "e", CFG,
                                       simulate_outcomes=True)
    ds = read_dataset(tmp_path / "e")
    df, joined = ds.read("train"), slice(0, 27)
    assert ds.meta["outcomes"] == {"joined": 27, "simulated": 27}
    assert "SIMULATED for 27 of 54 row(s)" in capsys.readouterr().err
    assert (df.r_ad[joined] == 1.0).all() and (df.orders[joined] == 4).all()
    np.testing.assert_allclose(df.rewards[joined], 1.0 + 2.0 + CFG.sim.eta * 3.0, rtol=1e-6)
    np.testing.assert_allclose(df.r_fee[27:], fill_outcomes(obs[keep], actions[keep], CFG.sim, seed=CFG.seed)["r_fee"],
                               rtol=1e-6)  # the file after: simulated, as before


def test_import_bad_input_names_the_file_and_the_field(tmp_path: Path) -> None:
    def fails(match: str, **override: Any) -> None:
        path = tmp_path / "bad.parquet"
        _log(path, **override)
        with pytest.raises(DataError, match=match):
            import_decision_log([path], tmp_path / "out", CFG, simulate_outcomes=True)

    dim = obs_layout(CFG.sim)["obs_dim"]
    fails(rf"bad\.parquet: field 'alloc_obs' row 0: {dim - 1} floats, but the config's observation has {dim}",
          alloc_obs=pa.array([[0.0] * (dim - 1)] * 30, pa.list_(pa.float32())))
    fails(r"bad\.parquet: field 'alloc_obs' row 0: non-finite",
          alloc_obs=pa.array([[float("nan")] * dim] * 30, pa.list_(pa.float32())))
    fails(rf"bad\.parquet: field 'alloc_action' row 0: value 32.0 is not an action .*\[0, {CFG.num_actions}\)",
          alloc_action=pa.array([32] * 30, pa.int32()))
    fails(r"bad\.parquet: field 'alloc_propensity' row 0: value 0.0 is not a propensity",
          alloc_propensity=pa.array([0.0] * 30, pa.float64()))
    fails(r"bad\.parquet: field 'alloc_action' row 0: null", alloc_action=pa.nulls(30, pa.int32()))
    fails(r"no usable row .* 30 \(allocation fell back\)", fallback=tuple(range(30)))
    pq.write_table(pa.table({"alloc_obs": pa.array([[0.0]], pa.list_(pa.float32()))}), tmp_path / "other.parquet")
    with pytest.raises(DataError, match=r"other\.parquet: missing column\(s\) \['alloc_action', 'alloc_fallback', "
                                        r"'alloc_propensity'\]"):
        import_decision_log([tmp_path / "other.parquet"], tmp_path / "out", CFG)
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"text\.parquet: not a readable Parquet file"):
        import_decision_log([tmp_path / "text.parquet"], tmp_path / "out", CFG)
    with pytest.raises(DataError, match="at least one"):
        import_decision_log([], tmp_path / "out", CFG)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- ε-greedy serving

META = model_meta(CFG)


def _module() -> CrossDQNModule:
    return crossdqn_module(CFG)


def test_epsilon_greedy_propensities_and_the_greedy_default() -> None:
    obs = FeedSim(CFG.sim, make_requests(CFG.sim, 400, 4)).observe()
    reqs = requests_from_obs(obs, META["obs_layout"], ids=[f"r{i}" for i in range(400)])
    module = _module()
    greedy = q_policy(module)(obs)
    plain = AllocationPolicy(module, CFG, META, "crossdqn@1").decide(reqs)
    assert [a["action"] for a in plain] == greedy.tolist() and {a["propensity"] for a in plain} == {1.0}
    eps, size = 0.4, CFG.num_actions
    policy = AllocationPolicy(module, CFG.override({"serve_epsilon": eps}), META, "crossdqn@1")
    answers = policy.decide(reqs)
    resp = AllocationPolicy.response_schema(META)
    for a in answers:
        resp.model_validate(a)
    acts = np.array([a["action"] for a in answers])
    props = np.array([a["propensity"] for a in answers])
    same = acts == greedy
    np.testing.assert_allclose(props[same], 1 - eps + eps / size)
    np.testing.assert_allclose(props[~same], eps / size)
    assert abs((~same).mean() - eps * (1 - 1 / size)) < 0.08  # explored share ~ ε (1 - 1/|A|)
    assert [a["ad_slots"] for a in answers] == [[bool(x >> k & 1) for k in range(K)] for x in acts]
    assert [policy.decide([r])[0]["action"] for r in reqs[:50]] == acts[:50].tolist()  # reproducible per id


class _Alloc:
    ref = "crossdqn@v0001"

    async def decide(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"request_id": r["request_id"], "model": self.ref, "action": 5, "ad_slots": [True, False, True],
                 "q": [], "propensity": 0.0125} for r in requests]


def test_the_graph_logs_the_allocations_propensity() -> None:
    req = {"request_id": "r1", "user": {"user_id": "u1", "utility_state": None, "journey": None,
                                        "profile": [0.5, 0.5, 0.1, 1.0], "history": [[0.1, 0.2]]},
           "screen": [0.0, 1.0, 1.0, 0.0],
           "ads": [{"ad_id": f"a{k}", "advertiser": f"adv{k}", "campaign": "fixed", "bid": 30.0, "auto": None,
                    "features": {}, "content": [0.2, 0.1], "value": 1.0, "p_long": 0.1} for k in range(3)],
           "organic": [{"item_id": f"o{k}", "content": [0.3, 0.3], "value": 1.0} for k in range(3)]}
    stages = {"ranking": None, "bidding": None, "utility": None, "allocation": _Alloc(), "channel": None}
    rows = []
    for alloc in (_Alloc(), None):
        graph = FeedGraph({**stages, "allocation": alloc}, None, GraphSettings(window=3, fixed_ad_slots=(1,)))
        rows.append(asyncio.run(graph.decide(req)).row)
    logged = pa.Table.from_pylist(rows, schema=LOG_SCHEMA_).to_pylist()
    assert [r["alloc_propensity"] for r in logged] == [0.0125, 1.0]  # the fallback is deterministic
    assert [r["alloc_action"] for r in logged] == [5, -1] and [r["alloc_fallback"] for r in logged] == [False, True]
