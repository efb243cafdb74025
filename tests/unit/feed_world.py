"""The feed graph with the five real serving policies, in process and without Ray (feed door tests).

Each stage is its workload's own policy class around a tiny network with seeded random weights and
a small meta (no training, no dataset): what matters here is what a request does to the schemas,
the policies' input encoding, the networks' float32 arithmetic and the graph, not the answers'
quality. The ledger is the real :class:`adray.pacing.Ledger` in memory.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from typing import Any

import pydantic
import torch
from hypothesis import strategies as st

from adray.config import load_config
from adray.data.features import CategoricalFeature, FeatureMap
from adray.pacing import Ledger, LocalLedgerClient, PacingSettings
from adray.workload import get_workload
from serve_apps.feed_batching import LocalStage
from serve_apps.feed_graph import FeedGraph, GraphSettings
from serve_apps.feed_ingress import stage_schemas
from serve_apps.feed_schema import feed_request_schema
from workloads.drlput import columns as C

FM = FeatureMap((CategoricalFeature("user_id", 50), CategoricalFeature("item_id", 30)), ("price",), ("click", "conversion"))
MAX_ITEMS = 40
STEPS = 24
PACING = PacingSettings(steps_per_day=STEPS, day_seconds=2400.0)
CLOCK = 1_000_000.0  # day 416, step 16


@functools.cache
def world() -> dict[str, Any]:
    """role -> (policy, meta) of the five stages (built once per process: ~1 s)."""
    from tests.helpers import crossdqn_module
    from workloads.crossdqn.config import CrossDQNConfig
    from workloads.crossdqn.serving import AllocationPolicy
    from workloads.crossdqn.train import model_meta as crossdqn_meta
    from workloads.drlput.actions import ActionSpace
    from workloads.drlput.config import DRLPUTConfig
    from workloads.drlput.model import PolicyNet
    from workloads.drlput.policy import UtilityPolicy
    from workloads.mtorl.model import build_model as mtorl_model
    from workloads.mtorl.serving import ChannelPolicy
    from workloads.pwiser.serving import RankingPolicy
    from workloads.vamo.policy import BidPolicy
    from workloads.vamo.train import VamoModel
    from workloads.vamo.train import build_model as vamo_net

    torch.manual_seed(0)
    out: dict[str, Any] = {}
    pw = get_workload("pwiser")
    cfg = pw.config_cls(model="mmoe", embedding_dim=4, expert_units=(8,), tower_units=(8,), bottom_units=(8,),
                        dnn_units=(8,), num_experts=2, num_specific_experts=1)
    meta = {"feature_map": FM.to_dict()}
    out["ranking"] = (RankingPolicy(pw.trainer.spec.build_model(cfg, meta).eval(), cfg, meta, "pwiser@v0001"), meta)

    va = get_workload("vamo")
    cfg = load_config(va.config_cls, "smoke", va.configs_dir)
    meta = {"state_mean": [0.0] * 16, "state_std": [1.0] * 16, "max_steps": STEPS, "steps_per_day": STEPS,
            "periods": [2, 4], "rtg_scale": 1.0, "rtg_target": [1.0, 1.0, 1.0]}
    model = VamoModel([vamo_net(cfg, meta).eval()], cfg, meta)
    out["bidding"] = (BidPolicy(model, cfg, meta, "vamo@v0001"), meta)

    cfg = DRLPUTConfig()
    net = PolicyNet(ActionSpace(cfg.action).size, embed_dim=4, hidden=(16,)).eval()
    out["utility"] = (UtilityPolicy(net, cfg, {}, "drlput@v0001"), {})

    cfg = CrossDQNConfig(embed_dim=4, hidden=16, n_requests=40, seed=2)
    meta = crossdqn_meta(cfg)
    out["allocation"] = (AllocationPolicy(crossdqn_module(cfg, 0.3), cfg, meta, "crossdqn@v0001"), meta)

    mt = get_workload("mtorl")
    cfg = load_config(mt.config_cls, "smoke", mt.configs_dir, {"policy": "stochastic"})
    meta = {"num_channels": 3, "state_dim": 4, "num_gain_classes": 3, "window": cfg.n, "reward_minmax": [0.0, 1.0]}
    out["channel"] = (ChannelPolicy(mtorl_model(cfg, meta).eval(), cfg, meta, "mtorl@v0001"), meta)
    return out


def metas() -> dict[str, dict[str, Any]]:
    return {role: meta for role, (_, meta) in world().items()}


@functools.cache
def feed_request() -> type[pydantic.BaseModel]:
    """The ingress's FeedRequest model for these five models."""
    refs = {role: policy.ref for role, (policy, _) in world().items()}
    return feed_request_schema(stage_schemas(metas(), refs, MAX_ITEMS), MAX_ITEMS)


def local_stage(policy: Any, batch_wait_s: float = 0.0) -> LocalStage:
    """The ingress's LocalStage around ``policy`` (no registry)."""
    return LocalStage(policy, batch_wait_s, max_batch=16)


def ledger() -> Ledger:
    return Ledger(None, "feed-door", PACING, clock=lambda: CLOCK, audit=True)


def graph(led: Ledger | None = None, **stages: Any) -> FeedGraph:
    """The graph as the ingress builds it (settings from the metas), on the fake clock."""
    base = {role: local_stage(policy) for role, (policy, _) in world().items()}
    lo = metas()["allocation"]["obs_layout"]
    settings = GraphSettings(window=lo["window"], stage_timeout_s=5.0, fixed_ad_slots=(1, 3),
                             bidding_tasks=len(world()["bidding"][0].task_names(metas()["bidding"])))
    return FeedGraph({**base, **stages}, LocalLedgerClient(led if led is not None else ledger()), settings, PACING,
                     clock=lambda: CLOCK)


def body(n_ads: int = 6, n_organic: int = 4, journey: bool = True) -> dict[str, Any]:
    """A valid feed request: ads alternate fixed / auto over three advertisers (adv1 auto)."""
    lo = metas()["allocation"]["obs_layout"]
    d, t = lo["item_dim"], lo["hist_len"]
    dim = metas()["channel"]["state_dim"]
    ads = []
    for i in range(n_ads):
        adv = f"adv{i % 3}"
        auto = adv == "adv1"
        ads.append({"ad_id": f"a{i}", "advertiser": adv, "campaign": "auto" if auto else "fixed",
                    "bid": None if auto else 0.5 + 0.1 * i,
                    "auto": {"budget": 50.0, "cpa_constraint": 2.0, "task": 1} if auto else None,
                    "features": {"user_id": i % 50, "item_id": (3 * i) % 30, "price": 0.1 * i},
                    "content": [0.1 * ((i + k) % 5) for k in range(d)], "value": 1.0 + i % 3, "p_long": 0.1})
    return {"request_id": "feed-1",
            "user": {"user_id": "u1",
                     "utility_state": {**{c: 1 for c in C.CAT_FEATURES}, **{c: 0.2 for c in C.NUM_FEATURES}},
                     "journey": {"states": [[0.1] * dim, [0.2] * dim], "channels": [1], "gains": [0.5],
                                 "costs": [0.1]} if journey else None,
                     "profile": [0.5] * lo["profile"], "history": [[0.2] * d for _ in range(t)]},
            "screen": [0.1] * lo["ctx"], "ads": ads,
            "organic": [{"item_id": f"o{j}", "content": [0.3] * d, "value": 1.0} for j in range(n_organic)]}


# ------------------------------------------------------------------ mutations of a body (fuzz tests)
EXTREME_FLOATS = [1e308, -1e308, math.inf, -math.inf, math.nan, 3.5e38, -3.5e38, 3.4e38, 1e-308, -0.0, -1.0,
                  1e4 + 1, 1e9, 1e30]
EXTREME_INTS = [10**30, -(10**30), 2**63, 2**63 - 1, -(2**63), -(2**63) - 1, -1, 0, 3, 50, 10**12, 2**31]
OTHER = ["", "x" * 300, "a0", "adv1", "NaN", None, True, [], {}, [1.0], {"budget": 1.0}]
VALUES = st.one_of(st.sampled_from(EXTREME_FLOATS), st.sampled_from(EXTREME_INTS), st.sampled_from(OTHER),
                   st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(2**70), max_value=2**70))
PLAUSIBLE = {float: st.floats(-1e3, 1e3), int: st.integers(-100, 10**6), str: st.text(max_size=12)}
"""Same-typed values of ordinary size: most bodies mutated with these validate and reach the graph."""
OPS = ("set", "set", "set", "plausible", "plausible", "plausible", "delete", "unknown", "duplicate")


def slots(obj: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of ``obj``, nested."""
    out = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        out.append((obj, k))
        out += slots(v)
    return out


def mutated(draw: Any, body: dict[str, Any], most: int = 4) -> str:
    """``body`` (changed in place) after 0..``most`` drawn mutations, as raw JSON: a value anywhere
    set to an extreme (float, int, string, null, list, object) or to an ordinary value of its type;
    a key deleted or an unknown one added; a list item duplicated. One body in 20 is cut short."""
    for _ in range(draw(st.integers(0, most))):
        parent, key = draw(st.sampled_from(slots(body)))
        op = draw(st.sampled_from(OPS))
        if op == "set":
            parent[key] = draw(VALUES)
        elif op == "plausible" and type(parent[key]) in PLAUSIBLE:
            parent[key] = draw(PLAUSIBLE[type(parent[key])])
        elif op == "delete" and isinstance(parent, dict):
            del parent[key]
        elif op == "unknown" and isinstance(parent, dict):
            parent["colour"] = draw(VALUES)
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    raw = json.dumps(body)  # non-finite floats as the tokens NaN / Infinity, which the parser reads
    if draw(st.integers(0, 19)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


def finite(obj: Any) -> bool:
    """No non-finite float anywhere in ``obj`` (nested dicts, lists)."""
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(finite(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return all(finite(v) for v in obj)
    return True
