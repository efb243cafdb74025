"""The feed graph's decision-log row: one per request, Parquet via ``adray.decision_log``.

The utility stage's columns are its policy's (``log_fields``/``log_values``): DRL-PUT's log columns
(``columns.LOG_COLUMNS``:
state, action, propensity, policy id, model versions, the values the action set, and the outcome
fields ``campaign``, ``bid``, ``revenue``, ``click``, ``long_click``, ``conv`` and the predictions),
so ``adray data import drlput-log`` reads the log once the events are joined. The outcome is that
of the top shown ad (position order); ``revenue``/``click``/``long_click``/``conv`` stay null until
joined. The allocation stage logs its observation, action and propensity (what ``adray data import
crossdqn-log`` reads; the propensity is 1.0 for a greedy allocation model and for the fallback), the
channel stage its channel and propensity; the feed itself, fallbacks, model versions,
diagnostics (out-of-vocabulary ids per stage and feature, as in the answer) and latency complete
the row.

The log never holds a non-finite number: the request's values are bounded at the door and the graph
falls back from any stage answer that is not finite, so none should reach the row; should one
still do, :func:`repair_nonfinite` writes it as null, and the row's ``diagnostics`` names the
column under ``nonfinite`` (the graph counts and logs it: a bug to fix, never a silent ``inf``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa

_GRAPH_FIELDS = [
    pa.field("user_id", pa.string()),
    pa.field("alloc_obs", pa.list_(pa.float32())),
    pa.field("alloc_action", pa.int32()),
    pa.field("alloc_propensity", pa.float64()),
    pa.field("alloc_fallback", pa.bool_()),
    pa.field("channel", pa.int32()),
    pa.field("channel_propensity", pa.float64()),
    pa.field("feed_ids", pa.list_(pa.string())),
    pa.field("feed_kinds", pa.list_(pa.string())),
    pa.field("feed_prices", pa.list_(pa.float64())),
    pa.field("bids", pa.string()),  # JSON {advertiser: alpha}
    pa.field("fallbacks", pa.string()),  # JSON {stage: reason}
    pa.field("diagnostics", pa.string()),  # JSON {"out_of_vocab": {stage: {feature: count}}, "nonfinite": [column]}
    pa.field("latency_ms", pa.float64()),
    pa.field("logged_at", pa.int64()),
]


def log_schema(utility_policy: Any) -> pa.Schema:
    """The log's schema: the utility stage's columns (its policy's ``log_fields``), then the graph's."""
    return pa.schema(utility_policy.log_fields() + _GRAPH_FIELDS)


CAMPAIGN_CODES = {"fixed": 0, "auto": 1}
"""Campaign codes of the utility stage's log: a fixed CPC bid optimises clicks (0), auto-bidding
conversions (1); -1 when no ad is shown."""


def log_row(utility_policy: Any, req: dict[str, Any], answer: dict[str, Any], alloc_req: dict[str, Any],
            ranked: list[dict[str, Any]], util_ok: bool) -> dict[str, Any]:
    """The decision-log row of one answered request (``ranked``: the auction's ranked ads)."""
    by_id = {x["ad"]["ad_id"]: x for x in ranked}
    top = next((by_id[s["id"]] for s in answer["feed"] if s["kind"] == "ad"), None)
    shown = None
    if top is not None:
        a = top["ad"]
        shown = {"campaign": CAMPAIGN_CODES[a["campaign"]],
                 "bid": float(a["bid"]) if a["campaign"] == "fixed" else answer["bids"].get(a["advertiser"], 0.0),
                 "pred_click": top["pctr"], "pred_long": float(a["p_long"]), "pred_conv": top["pcvr"]}
    row = utility_policy.log_values(req["request_id"], req["user"].get("utility_state") or {},
                                    answer["decisions"]["utility"] if util_ok else None, answer["utility"],
                                    answer["models"].get("utility", "manual"),
                                    json.dumps(answer["models"], sort_keys=True), shown)
    alloc = answer["decisions"]["allocation"]
    chan = answer["decisions"].get("channel")
    try:
        obs = obs_vector(alloc_req).tolist()
    except ValueError:  # ragged blocks (no allocation model to shape the request)
        obs = None
    row.update({
        "user_id": req["user"]["user_id"], "alloc_obs": obs, "alloc_action": alloc["action"],
        "alloc_propensity": float(alloc["propensity"]),
        "alloc_fallback": "allocation" in answer["fallbacks"],
        "channel": chan["action"] if chan else None, "channel_propensity": chan["propensity"] if chan else None,
        "feed_ids": [s["id"] for s in answer["feed"]], "feed_kinds": [s["kind"] for s in answer["feed"]],
        "feed_prices": [float(s["price"]) if s.get("price") is not None else 0.0 for s in answer["feed"]],
        "bids": json.dumps(answer["bids"], sort_keys=True), "fallbacks": json.dumps(answer["fallbacks"], sort_keys=True),
        "latency_ms": float(total) if (total := answer["latency_ms"].get("total")) is not None else None,
    })
    diagnostics = dict(answer.get("diagnostics") or {})
    repaired = repair_nonfinite(row)
    if repaired:
        diagnostics["nonfinite"] = repaired
    row["diagnostics"] = json.dumps(diagnostics, sort_keys=True) if diagnostics else None
    return row


def repair_nonfinite(obj: dict[str, Any] | list[Any], path: str = "") -> list[str]:
    """Replace every non-finite float in ``obj`` (nested dicts and lists, in place) by None; the
    paths of those replaced (``feed_prices[2]``). The last guard of the answer and the log row."""
    out: list[str] = []
    named = isinstance(obj, dict)
    for k, v in obj.items() if named else enumerate(obj):
        if isinstance(v, float):
            if not math.isfinite(v):
                obj[k] = None
                out.append((f"{path}.{k}" if path else str(k)) if named else f"{path}[{k}]")
        elif isinstance(v, dict | list):
            out += repair_nonfinite(v, (f"{path}.{k}" if path else str(k)) if named else f"{path}[{k}]")
    return out


def obs_vector(alloc_req: dict[str, Any]) -> np.ndarray:
    """The allocation request as the flat observation Cross DQN sees (blocks in FeedSim order)."""
    parts = [np.asarray(alloc_req[b], np.float32).ravel() for b in ("profile", "history", "ads", "organic", "context")]
    return np.concatenate(parts)
