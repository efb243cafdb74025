"""Realistic feed requests, assembled from each stage's own sample requests (tests, demo, load).

Each stage's policy draws requests from the dataset its model was trained on
(``Policy.sample_requests``); a feed request takes its blocks from them: the ads' ranking features
from the ranking stage's candidates, the ads' and organic items' content and value and the user's
profile, history and screen from the allocation stage's screens, the utility state, the journey
(channel stage), and the auto-bidding advertisers' CPA constraint and task (bidding stage). Ads belong to a
pool of ``n_advertisers`` advertisers; every other one bids automatically with ``budget``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

Source = tuple[Any, Any, Path]
"""(policy class, config, dataset directory) of one stage's model."""


def sample_feed_requests(sources: dict[str, Source], n: int, n_ads: int = 50, n_organic: int = 20,
                         n_advertisers: int = 20, budget: float = 50.0, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` feed requests; ``sources`` needs ``ranking`` and ``allocation``; the other stages are optional."""
    rng = np.random.default_rng(seed)

    def draw(role: str, count: int) -> list[dict[str, Any]]:
        policy, cfg, data = sources[role]
        return policy.sample_requests(cfg, data, count, seed=int(rng.integers(2**31 - 1)))

    cands = [c for r in draw("ranking", max(4, 2 * n_ads // 10)) for c in r["candidates"]]
    screens = draw("allocation", max(n, 8))
    items = []
    for s in screens:
        for row in (*s["ads"], *s["organic"]):
            if row[-1] > 0:  # present
                items.append((row[:-3], row[-3] * 5.0))
    util = draw("utility", n) if "utility" in sources else [{}] * n
    journeys = draw("channel", n) if "channel" in sources else [None] * n
    bidders = draw("bidding", n_advertisers) if "bidding" in sources else []
    advertisers = []
    for j in range(n_advertisers):
        auto = j % 2 == 1 and bidders
        advertisers.append({"advertiser": f"adv{j}", "campaign": "auto" if auto else "fixed",
                            "auto": {"budget": budget, "cpa_constraint": bidders[j]["cpa_constraint"],
                                     "task": bidders[j]["task"]} if auto else None})
    out = []
    for i in range(n):
        screen = screens[i % len(screens)]
        ads = []
        for k in range(n_ads):
            c = dict(cands[int(rng.integers(len(cands)))])
            c.pop("ad_id")
            adv = advertisers[int(rng.integers(n_advertisers))]
            content, value = items[int(rng.integers(len(items)))]
            ads.append({"ad_id": f"ad{k}-{adv['advertiser']}", "advertiser": adv["advertiser"],
                        "campaign": adv["campaign"], "auto": adv["auto"],
                        "bid": round(float(rng.lognormal(0.0, 0.5)), 4) if adv["campaign"] == "fixed" else None,
                        "features": c, "content": list(content), "value": float(value),
                        "p_long": round(float(rng.uniform(0, 0.3)), 4)})
        organic = []
        for k in range(n_organic):
            content, value = items[int(rng.integers(len(items)))]
            organic.append({"item_id": f"item{k}", "content": list(content), "value": float(value)})
        state = {k: v for k, v in util[i].items() if k != "request_id"}
        journey = {k: v for k, v in journeys[i].items() if k != "request_id"} if journeys[i] else None
        out.append({"request_id": f"feed-{seed}-{i}",
                    "user": {"user_id": f"u{int(rng.integers(10_000))}", "utility_state": state, "journey": journey,
                             "profile": screen["profile"], "history": screen["history"]},
                    "screen": screen["context"], "ads": ads, "organic": organic})
    return out


def latest_models(registry: str, train_missing: bool) -> dict[str, str]:
    """The latest published model of each stage's workload; with ``train_missing`` a missing one is
    trained first on its ``smoke`` config with generated data (benchmarks, demos)."""
    from adray.config import load_config
    from adray.registry import Registry
    from adray.train import run_training
    from adray.workload import GENERATE, get_workload
    from serve_apps.feed_schema import stage_workloads

    reg, refs = Registry(registry), {}
    for role, (name, _) in stage_workloads().items():
        latest = reg.latest(name)
        if latest is None:
            if not train_missing:
                raise LookupError(f"no published {name} model in {registry} (train one, or let it be trained: train_missing)")
            wl = get_workload(name)
            cfg = load_config(wl.config_cls, "smoke", wl.configs_dir, {"data": GENERATE})
            print(f"[feed] training {name} (smoke) ...", file=sys.stderr, flush=True)
            refs[role] = run_training(wl, cfg, num_workers=1).model_ref
        else:
            refs[role] = f"{name}@{latest}"
    return refs


def model_sources(refs: dict[str, str], registry: str) -> dict[str, Source]:
    """(policy class, config, dataset directory) of each stage's published model."""
    from adray.serving import policy_meta, resolve_model
    from adray.workload import data_dir_for

    out = {}
    for role, ref in refs.items():
        wl, cfg, _ = policy_meta(resolve_model(ref, registry), registry)
        out[role] = (wl.policy, cfg, data_dir_for(wl, cfg))
    return out
