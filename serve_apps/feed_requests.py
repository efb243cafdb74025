"""Realistic feed requests, assembled from each stage's own sample requests (tests, demo, load).

Each stage's policy draws requests from the dataset its model was trained on
(``Policy.sample_requests``); a feed request takes its blocks from them: the ads' ranking features
from pwiser's candidates, the ads' and organic items' content and value and the user's profile,
history and screen from Cross DQN's screens, the utility state from DRL-PUT's, the journey from
MTORL's, and the auto-bidding advertisers' CPA constraint and task from VAMO's. Ads belong to a
pool of ``n_advertisers`` advertisers; every other one bids automatically with ``budget``.
"""

from __future__ import annotations

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
