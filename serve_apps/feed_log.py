"""The feed graph's decision-log row: one per request, Parquet via ``adray.decision_log``.

The utility stage's columns are DRL-PUT's log columns (``workloads.drlput.columns.LOG_COLUMNS``:
state, action, propensity, policy id, model versions, the values the action set, and the outcome
fields ``campaign``, ``bid``, ``revenue``, ``click``, ``long_click``, ``conv`` and the predictions),
so ``adray data import drlput-log`` reads the log once the events are joined. The outcome is that
of the top shown ad (position order); ``revenue``/``click``/``long_click``/``conv`` stay null until
joined. The allocation stage logs its observation and action (what an offline Cross DQN trainer
reads), the channel stage its channel and propensity; the feed itself, fallbacks, model versions
and latency complete the row.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from workloads.drlput import columns as C

_GRAPH_FIELDS = [
    pa.field("user_id", pa.string()),
    pa.field("alloc_obs", pa.list_(pa.float32())),
    pa.field("alloc_action", pa.int32()),
    pa.field("alloc_fallback", pa.bool_()),
    pa.field("channel", pa.int32()),
    pa.field("channel_propensity", pa.float64()),
    pa.field("feed_ids", pa.list_(pa.string())),
    pa.field("feed_kinds", pa.list_(pa.string())),
    pa.field("feed_prices", pa.list_(pa.float64())),
    pa.field("bids", pa.string()),  # JSON {advertiser: alpha}
    pa.field("fallbacks", pa.string()),  # JSON {stage: reason}
    pa.field("latency_ms", pa.float64()),
    pa.field("logged_at", pa.int64()),
]


def _drlput_fields() -> list[pa.Field]:
    out = [pa.field(c, pa.int32()) for c in C.CAT_FEATURES] + [pa.field(c, pa.float64()) for c in C.NUM_FEATURES]
    out += [pa.field(C.REQUEST_ID, pa.string(), nullable=False), pa.field(C.ACTION, pa.int32()),
            pa.field(C.PROPENSITY, pa.float64()), pa.field(C.POLICY_ID, pa.string()),
            pa.field(C.MODEL_VERSIONS, pa.string())]
    out += [pa.field(c, pa.float64()) for c in C.PARAM_COLUMNS]
    out += [pa.field(C.CAMPAIGN, pa.int32()), pa.field(C.BID, pa.float64())]
    out += [pa.field(c, pa.float64()) for c in (C.REVENUE, C.CLICK, C.LONG_CLICK, C.CONV)]
    out += [pa.field(c, pa.float64()) for c in (C.PRED_CLICK, C.PRED_LONG, C.PRED_CONV)]
    return out


LOG_SCHEMA = pa.schema(_drlput_fields() + _GRAPH_FIELDS)
CAMPAIGN_CODES = {"fixed": 0, "auto": 1}
"""DRL-PUT campaign codes: a fixed CPC bid optimises clicks (0), auto-bidding conversions (1); -1 organic."""


def log_row(req: dict[str, Any], answer: dict[str, Any], alloc_req: dict[str, Any], ranked: list[dict[str, Any]],
            util_ok: bool) -> dict[str, Any]:
    """The decision-log row of one answered request (``ranked``: the auction's ranked ads)."""
    state = req["user"].get("utility_state") or {}
    row: dict[str, Any] = {c: state.get(c) for c in C.STATE}
    util = answer["decisions"]["utility"]
    row.update({C.REQUEST_ID: req["request_id"], C.ACTION: util["action"] if util_ok else None,
                C.PROPENSITY: util["propensity"] if util_ok else None,
                C.POLICY_ID: answer["models"].get("utility", "manual"),
                C.MODEL_VERSIONS: json.dumps(answer["models"], sort_keys=True),
                **{p: answer["utility"][p] for p in C.PARAM_COLUMNS}})
    by_id = {x["ad"]["ad_id"]: x for x in ranked}
    top = next((by_id[s["id"]] for s in answer["feed"] if s["kind"] == "ad"), None)
    if top is not None:
        a = top["ad"]
        row.update({C.CAMPAIGN: CAMPAIGN_CODES[a["campaign"]],
                    C.BID: float(a["bid"]) if a["campaign"] == "fixed" else answer["bids"].get(a["advertiser"]),
                    C.PRED_CLICK: top["pctr"], C.PRED_LONG: float(a["p_long"]), C.PRED_CONV: top["pcvr"]})
    else:
        row.update({C.CAMPAIGN: -1, C.BID: 0.0})
    alloc = answer["decisions"]["allocation"]
    chan = answer["decisions"].get("channel")
    try:
        obs = obs_vector(alloc_req).tolist()
    except ValueError:  # ragged blocks (no allocation model to shape the request)
        obs = None
    row.update({
        "user_id": req["user"]["user_id"], "alloc_obs": obs, "alloc_action": alloc["action"],
        "alloc_fallback": "allocation" in answer["fallbacks"],
        "channel": chan["action"] if chan else None, "channel_propensity": chan["propensity"] if chan else None,
        "feed_ids": [s["id"] for s in answer["feed"]], "feed_kinds": [s["kind"] for s in answer["feed"]],
        "feed_prices": [float(s["price"]) if s.get("price") is not None else 0.0 for s in answer["feed"]],
        "bids": json.dumps(answer["bids"], sort_keys=True), "fallbacks": json.dumps(answer["fallbacks"], sort_keys=True),
        "latency_ms": float(answer["latency_ms"].get("total", np.nan)),
    })
    return row


def obs_vector(alloc_req: dict[str, Any]) -> np.ndarray:
    """The allocation request as the flat observation Cross DQN sees (blocks in FeedSim order)."""
    parts = [np.asarray(alloc_req[b], np.float32).ravel() for b in ("profile", "history", "ads", "organic", "context")]
    return np.concatenate(parts)
