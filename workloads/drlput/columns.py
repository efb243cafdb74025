"""Column names of the DRL-PUT logs: one schema for simulator logs and the serving graph's decision log.

One row = one ad request of the utility stage: the state the policy saw, the action it took and
its propensity, what that action set in Eq. 3.1, what the shown item did (the reward components),
and who decided (behaviour policy id, model versions). The serving graph's utility stage writes
the same columns (the reward components are joined later from the event stream); the offline
trainers read logs of either origin through ``data.read_logs``, which checks them.
"""

from __future__ import annotations

# ---------------------------------------------------------------- state (what the policy sees)
CAT_FEATURES: dict[str, int] = {
    "age": 6,  # age bucket
    "gender": 3,
    "metro": 8,  # metro area
    "hour": 24,  # hour of day (request time)
    "dow": 7,  # day of week
    "surface": 3,  # 0 home feed, 1 search, 2 related pins
}
"""Categorical state features and their cardinalities (values 0..card-1): user profile + context."""
NUM_FEATURES: tuple[str, ...] = (
    "hist_ctr",  # user's historical click-through rate on ads
    "hist_long",  # historical P(long click | click)
    "hist_cvr",  # historical P(conversion | click)
    "hist_spend",  # historical advertiser spend per impression shown to the user (CPM / 1000)
    "activity",  # log(past ad impressions) / log(max history): how much history the user has
)
"""Numerical state features (user activity history)."""
STATE = (*CAT_FEATURES, *NUM_FEATURES)

# ---------------------------------------------------------------- decision
REQUEST_ID = "request_id"
ACTION = "action"  # int: index in the grouped grid (actions.ActionSpace)
PROPENSITY = "propensity"  # μ(a|s) of the logged action under the deciding policy, in (0, 1]
POLICY_ID = "policy_id"  # which policy decided: "uniform", "gaussian", "drlput@v0003", ...
MODEL_VERSIONS = "model_versions"  # the ranking models behind the predictions, e.g. "ctr=v12,cvr=v7"
PARAM_COLUMNS = ("w_click", "w_long", "w_conv", "reserve")  # the values the action set (Eq. 3.1)
DECISION = (REQUEST_ID, ACTION, PROPENSITY, POLICY_ID, MODEL_VERSIONS, *PARAM_COLUMNS)

# ---------------------------------------------------------------- outcome (reward components)
CAMPAIGN = "campaign"  # campaign type of the shown ad: 0 click, 1 conversion, 2 impression; -1 organic
BID = "bid"  # the shown ad's bid for its optimised action (0 for organic)
REVENUE = "revenue"  # Eq. 3.3 from the events: bid x (click | conversion | impression)
CLICK, LONG_CLICK, CONV = "click", "long_click", "conv"  # events of the shown item (0/1)
PRED_CLICK, PRED_LONG, PRED_CONV = "pred_click", "pred_long", "pred_conv"  # ranking models' predictions
OUTCOME = (CAMPAIGN, BID, REVENUE, CLICK, LONG_CLICK, CONV, PRED_CLICK, PRED_LONG, PRED_CONV)

LOG_COLUMNS = (*STATE, *DECISION, *OUTCOME)
"""Every column of a log file, in order."""
