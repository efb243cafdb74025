"""Cross DQN retrained from the serving graph's own decision log, without Serve: crossdqn v0001
(exploring, serve_epsilon 0.3) allocates simulator screens in the composed graph -> decision log ->
``adray data import crossdqn-log`` (outcomes simulated from the logged observations) -> crossdqn
v0002 trained on it, then both valued on held-out screens by the same outcome model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adray.cli import app
from adray.config import load_config
from adray.data import read_dataset
from adray.decision_log import DecisionLog, read_log
from adray.models import load_model
from adray.registry import Registry
from adray.serving import PolicyHandle
from adray.storage import Storage
from adray.train import run_training
from serve_apps.feed_graph import FeedGraph, GraphSettings
from serve_apps.feed_log import log_schema
from workloads.crossdqn import WORKLOAD
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.outcomes import fill_outcomes, rebuild
from workloads.crossdqn.rollout import q_policy
from workloads.crossdqn.sim import FeedSim, Requests, action_bits, make_requests
from workloads.drlput.policy import UtilityPolicy

LOG_SCHEMA_ = log_schema(UtilityPolicy)

pytestmark = pytest.mark.ray

N_REQUESTS = 3000
N_HELD_OUT = 20_000
EPSILON = 0.3
SEED = 0
PCTR = GraphSettings().fallback_pctr  # no ranking stage: every ad's pCTR, so ecpm = bid x PCTR


class LocalAllocation:
    """The allocation stage as the graph calls it, in-process (no Serve)."""

    def __init__(self, ref: str) -> None:
        self.handle = PolicyHandle(ref)
        self.ref = self.handle.ref

    async def decide(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.handle.decide(requests)


def feed_request(i: int, sim: FeedSim) -> dict[str, Any]:
    """The first screen of simulator request ``i`` as a feed request: its profile, history and
    context, its top K ads (fixed CPC, no ledger needed; bid / PCTR so that the graph's ecpm, the
    allocation model's bid feature, is the simulator's bid) and top K organic items."""
    r, k = sim.req, sim.cfg.slots
    ads = [{"ad_id": f"a{i}-{j}", "advertiser": f"adv{j}", "campaign": "fixed", "bid": float(r.bid[i, j]) / PCTR,
            "auto": None, "features": {}, "content": r.content["ad"][i, j].tolist(),
            "value": float(r.value["ad"][i, j]), "p_long": 0.1} for j in range(k)]
    organic = [{"item_id": f"o{i}-{j}", "content": r.content["org"][i, j].tolist(),
                "value": float(r.value["org"][i, j])} for j in range(k)]
    return {"request_id": f"feed-{i:06d}",
            "user": {"user_id": f"u{i}", "utility_state": None, "journey": None, "profile": r.profile[i].tolist(),
                     "history": r.hist[i].tolist()},
            "screen": [0.0, 1.0, 1.0, 0.0], "ads": ads, "organic": organic}


def one_row(req: Requests, i: int) -> Requests:
    """Request ``i`` of ``req`` alone."""
    def cut(v: Any) -> Any:
        return {kind: a[i:i + 1] for kind, a in v.items()} if isinstance(v, dict) else v[i:i + 1]

    return Requests(**{f.name: cut(getattr(req, f.name)) for f in dataclasses.fields(req)})


def test_graph_log_to_imported_data_to_retrained_allocation(ray_cluster, tmp_path: Path,  # noqa: ANN001
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = time.perf_counter()
    home = tmp_path / "home"
    monkeypatch.setenv("ADRAY_HOME", str(home))
    monkeypatch.delenv("ADRAY_STORAGE", raising=False)
    monkeypatch.delenv("ADRAY_REGISTRY", raising=False)
    cfg = load_config(CrossDQNConfig, "smoke", WORKLOAD.configs_dir,
                      {"data": str(tmp_path / "sim"), "serve_epsilon": EPSILON, "seed": SEED})
    WORKLOAD.make_data(cfg, tmp_path / "sim")
    out1 = run_training(WORKLOAD, cfg, num_workers=1)
    assert out1.model_ref == "crossdqn@v0001"
    t_v1 = time.perf_counter() - t0

    # ---- the graph allocates simulator screens; its rows go to the decision log under $ADRAY_HOME
    sim = FeedSim(cfg.sim, make_requests(cfg.sim, N_REQUESTS, seed=123))
    sim_obs = sim.observe()
    graph = FeedGraph({"ranking": None, "bidding": None, "utility": None,
                       "allocation": LocalAllocation("crossdqn@v0001"), "channel": None}, None, GraphSettings())

    async def run_all() -> list[Any]:
        return [await graph.decide(feed_request(i, sim)) for i in range(N_REQUESTS)]

    outcomes = asyncio.run(run_all())
    assert all(set(o.answer["fallbacks"]) == {"ranking", "utility", "channel"} for o in outcomes)  # allocation served
    storage = Storage(home)
    with DecisionLog(storage, "decisions/feed", LOG_SCHEMA_) as log:
        assert log.append([o.row for o in outcomes]) == N_REQUESTS
    table = read_log(storage, "decisions/feed")
    assert table.num_rows == N_REQUESTS and not any(table["alloc_fallback"].to_pylist())
    rid = np.array(table["request_id"].to_pylist())
    order = np.argsort(rid)  # the log's row order is the writer's; requests are numbered
    obs = np.array(table["alloc_obs"].to_pylist(), np.float32)[order]
    np.testing.assert_allclose(obs, sim_obs, rtol=1e-5, atol=1e-6)  # the graph showed the model the simulator's screen

    # ---- (b) the logged propensities are v0001's ε-greedy ones
    v1 = load_model("crossdqn@v0001").model
    greedy1 = q_policy(v1)(obs)
    actions = np.array(table["alloc_action"].to_pylist())[order]
    props = np.array(table["alloc_propensity"].to_pylist())[order]
    size = cfg.num_actions
    explored = actions != greedy1
    np.testing.assert_allclose(props[~explored], 1 - EPSILON + EPSILON / size)
    np.testing.assert_allclose(props[explored], EPSILON / size)
    assert abs(explored.mean() - EPSILON * (1 - 1 / size)) < 0.05

    # ---- import the log's own segment files with the CLI
    files = sorted(str(p) for p in (home / "decisions" / "feed").glob("date=*/*.parquet"))
    assert files
    res = CliRunner().invoke(app, ["data", "import", "crossdqn-log", *files, "--out", str(tmp_path / "imported"),
                                   "--config", "smoke", "--set", f"seed={SEED}", "--option", "simulate_outcomes=true"])
    assert res.exit_code == 0, (res.output, res.exception)
    ds = read_dataset(tmp_path / "imported")
    df = ds.read("train")
    assert len(df) == N_REQUESTS and ds.meta["decided_by"] == ["crossdqn@v0001"]
    assert df.terminateds.all() and (df.t == 0).all()

    # ---- (a) each imported reward is FeedSim on that row's rebuilt screen, played alone
    d_obs = np.stack(df.obs.to_numpy()).astype(np.float32)
    d_act = df.actions.to_numpy()
    rebuilt = rebuild(d_obs, cfg.sim, seed=cfg.seed)  # the importer's screens and uniforms
    for i in range(len(df)):
        alone = FeedSim(rebuilt.cfg, one_row(rebuilt.req, i))
        alone.ad_ptr[:], alone.org_ptr[:] = rebuilt.ad_ptr[i], rebuilt.org_ptr[i]
        out = alone.step(np.zeros(1, np.int64), d_act[i:i + 1])
        for c in ("r_ad", "r_fee", "r_ex"):
            assert df[c].iloc[i] == pytest.approx(float(out[c][0]), rel=1e-6, abs=1e-7), (i, c)
    np.testing.assert_allclose(df.rewards, df.r_ad + df.r_fee + cfg.sim.eta * df.r_ex, rtol=1e-5)
    truth = FeedSim(cfg.sim, sim.req).step(np.arange(N_REQUESTS), actions)  # the simulator's own first screens
    print(f"\nlogged screens: imported reward {df.rewards.mean():.4f}, simulator's own reward of the same "
          f"actions {truth['reward'].mean():.4f}")

    # ---- (c) v0002 from the log: published with its lineage; valued against the logging policy
    t1 = time.perf_counter()
    # 600 updates (iterations 12): smoke's 200 are sized for the simulator's multi-screen logs and
    # under-fit the one-screen training rows of the graph log (gain of "v0002 greedy" over the
    # logging policy with 2,400 training rows (80%), seeds 0-3: +0.011 +0.010 +0.025 +0.006 with 200
    # updates; +0.020 +0.052 +0.055 -0.012 with 600, s.e. ~0.0044 each; seed 3's v0001 is the
    # strongest of the four and v0002 loses to it: the retrain is noisy per seed. Since the 10% test
    # split, 2,100 rows (70%): seed 0 +0.045 with 600 updates)
    out2 = run_training(WORKLOAD, cfg.override({"data": str(tmp_path / "imported"), "iterations": 12}), num_workers=1)
    t_v2 = time.perf_counter() - t1
    assert out2.model_ref == "crossdqn@v0002"
    mv = Registry().get("crossdqn@v0002")
    assert mv.manifest["dataset"] == str((tmp_path / "imported").absolute())
    assert mv.manifest["dataset_hash"] == ds.manifest["content_hash"]
    assert ds.manifest["source"].startswith("crossdqn decision logs") and Path(files[0]).name in ds.manifest["source"]
    v2 = load_model("crossdqn@v0002").model

    held = FeedSim(cfg.sim, make_requests(cfg.sim, N_HELD_OUT, seed=456)).observe()  # screens v0002 never saw
    rng = np.random.default_rng(7)
    q1, q2 = served_scores(v1, held), served_scores(v2, held)  # (n, A): Q(s,a) - β·PAE(a)
    g1, g2 = q1.argmax(1), q2.argmax(1)
    assert (g1[:100] == q_policy(v1)(held[:100])).all()  # the served greedy rule
    explore = rng.random(N_HELD_OUT) < EPSILON
    policies = {"v0001 logging (eps-greedy)": np.where(explore, rng.integers(0, size, N_HELD_OUT), g1),
                "v0001 greedy": g1, "v0002 greedy": g2, "uniform random": rng.integers(0, size, N_HELD_OUT),
                f"v0001 greedy @ PAE {cfg.pae_target}": at_pae(q1, cfg.pae_target, cfg.sim.slots),
                f"v0002 greedy @ PAE {cfg.pae_target}": at_pae(q2, cfg.pae_target, cfg.sim.slots)}
    value = {name: fill_outcomes(held, a, cfg.sim, seed=99) for name, a in policies.items()}  # common random numbers
    per_action = np.stack([fill_outcomes(held, np.full(N_HELD_OUT, a), cfg.sim, seed=99)["reward"] for a in range(size)])
    k_ads = action_bits(cfg.sim.slots).sum(1)
    best_at = per_action[k_ads == round(cfg.pae_target * cfg.sim.slots)].mean(1).max()
    base = value["v0001 logging (eps-greedy)"]["reward"]
    print(f"outcome model on {N_HELD_OUT} held-out first screens: reward per screen (± s.e.), PAE, minus logging (± s.e.)")
    for name, v in value.items():
        diff = v["reward"] - base
        print(f"  {name:<30} {v['reward'].mean():.4f} ± {v['reward'].std() / np.sqrt(N_HELD_OUT):.4f}  "
              f"pae {v['ads'].mean() / cfg.sim.slots:.3f}  {diff.mean():+.4f} ± {diff.std() / np.sqrt(N_HELD_OUT):.4f}")
    print(f"  {'best single action':<30} {per_action.mean(1).max():.4f}  (action {int(per_action.mean(1).argmax())}, "
          f"{k_ads[per_action.mean(1).argmax()]} ads); best with {round(cfg.pae_target * cfg.sim.slots)} ads {best_at:.4f}")
    print(f"  {'per-screen oracle (hindsight)':<30} {per_action.max(0).mean():.4f}")
    print(f"v0002 greedy differs from v0001 greedy on {(g2 != g1).mean():.3f} of the screens")
    print("selection objective on each version's held-out logs (WDR reward per request at the PAE target, ± s.e.): "
          + ", ".join(f"{v} {o.metrics['val_reward_wdr']:.4f} ± {o.metrics['val_reward_wdr_se']:.4f}"
                      for v, o in (("v0001", out1), ("v0002", out2))))
    print(f"times: v0001 (data + training) {t_v1:.1f} s, v0002 training {t_v2:.1f} s, "
          f"total {time.perf_counter() - t0:.1f} s")
    # v0002 learned the log's (one-screen) rewards: better than the policy that logged them, on
    # screens it never saw (asserted at 3 s.e.). Measured gain of "v0002 greedy" over test seeds
    # 0-7 before issue 19 (3,000 training rows, 200 updates, β calibrated in the simulator): +0.033
    # +0.041 +0.043 +0.024 +0.016 +0.011 +0.022 +0.012; after it (20 % of the imported log held out
    # for selection, 2,400 training rows, β calibrated on held-out logged screens), 200 updates:
    # +0.011 +0.010 +0.025 +0.006 -0.006 +0.021 +0.068 +0.006; 600 updates: see above.
    for name in ("v0002 greedy", f"v0002 greedy @ PAE {cfg.pae_target}"):
        diff = value[name]["reward"] - base
        assert diff.mean() > 3 * diff.std() / np.sqrt(N_HELD_OUT), (name, diff.mean())


def served_scores(module: Any, obs: np.ndarray) -> np.ndarray:
    """(n, A) served scores of a loaded Cross DQN module (its greedy action is their argmax)."""
    with torch.no_grad():
        return module.net(torch.as_tensor(obs)).numpy()


def at_pae(q: np.ndarray, target: float, slots: int, steps: int = 20) -> np.ndarray:
    """Actions ``argmax_a q(s,a) - mu·PAE(a)`` with mu bisected so that the mean ads per slot is
    ``target`` (first screens: every slot the action asks for shows an ad)."""
    bits = action_bits(slots)
    pae = bits.mean(1)
    lo, hi = -4.0, 4.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if bits[(q - mid * pae).argmax(1)].mean() > target else (lo, mid)
    return (q - (lo + hi) / 2 * pae).argmax(1)
