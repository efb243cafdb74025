"""Outcomes of decision-log rows by simulation: the events the serving graph's own predictions imply.

The serving graph logs one row per feed request with the outcome fields of its top shown ad
(``campaign``, ``bid`` and the predictions ``pred_click``, ``pred_long``, ``pred_conv``) and
leaves the events (``click``, ``long_click``, ``conv``, ``revenue``) null until an event stream
is joined. Where no event stream exists (tests, demos, a first version of the loop), this module
draws them, row by row::

    top shown ad (campaign 0 fixed CPC bid, 1 auto-bidding):
        click      ~ Bernoulli(pred_click)
        long_click ~ click · Bernoulli(pred_long)     (pred_long: P(long click | click))
        conv       ~ click · Bernoulli(pred_conv)     (pred_conv: P(conversion | click))
        revenue    = bid · {click, conv, 1} for campaign {0 click, 1 conversion, 2 impression}   (Eq. 3.3)
    no ad shown (campaign -1): an organic item
        click      ~ Bernoulli(ORGANIC_CTR),  long_click ~ click · Bernoulli(ORGANIC_LONG)
        conv = 0, revenue = 0, predictions 0 (as the simulator's logs have them)

Be clear about what this is: the composed graph's own event model, in which the ranking
models' predictions are the truth. It is NOT the DRL-PUT simulator (``sim.py``): the graph's users,
ads and predictions come from its requests and its other stages, not from the simulator's
personas, so rewards drawn here say nothing about the simulator's ground truth, and a policy
cannot learn here anything the graph's predictions do not already say. It is a consistent world
for the plumbing (graph -> log -> import -> train -> gate), nothing more.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from workloads.drlput import columns as C

ORGANIC_CTR = 0.05
"""P(click) of the organic item shown when no ad clears the reserve (a constant: the graph logs no
prediction for organic items)."""
ORGANIC_LONG = 0.3
"""P(long click | click) of the organic item."""
EVENTS = (C.REVENUE, C.CLICK, C.LONG_CLICK, C.CONV)


def fill_outcomes(rows: pa.Table | pd.DataFrame, seed: int) -> pd.DataFrame:
    """The rows with their events drawn (see the module docstring); rows whose events are already
    joined keep them. Deterministic in ``seed`` and the row order.

    Raises:
        ValueError: a column the draw needs is missing, or a row shows an ad without predictions
            or a bid (the message names the column and the first such row).
    """
    df = rows.to_pandas() if isinstance(rows, pa.Table) else rows.copy()
    missing = [c for c in (C.CAMPAIGN, C.BID, C.PRED_CLICK, C.PRED_LONG, C.PRED_CONV) if c not in df.columns]
    if missing:
        raise ValueError(f"fill_outcomes: missing column(s) {missing}; expected the decision log's "
                         f"outcome fields {list(C.OUTCOME)}")
    for c in EVENTS:
        if c not in df.columns:
            df[c] = np.nan
    n = len(df)
    campaign = df[C.CAMPAIGN].to_numpy(dtype=float, na_value=-1).astype(np.int64)  # (n,)
    ad = campaign >= 0
    pred = {c: df[c].to_numpy(dtype=float, na_value=np.nan) for c in (C.PRED_CLICK, C.PRED_LONG, C.PRED_CONV)}
    bid = df[C.BID].to_numpy(dtype=float, na_value=np.nan)
    for name, values in (*pred.items(), (C.BID, bid)):
        bad = np.flatnonzero(ad & ~np.isfinite(values))
        if len(bad):
            raise ValueError(f"fill_outcomes: row {bad[0]} shows an ad (campaign {campaign[bad[0]]}) but its "
                             f"{name!r} is missing ({len(bad)} such row(s))")
    p_click = np.where(ad, np.clip(np.nan_to_num(pred[C.PRED_CLICK]), 0, 1), ORGANIC_CTR)
    p_long = np.where(ad, np.clip(np.nan_to_num(pred[C.PRED_LONG]), 0, 1), ORGANIC_LONG)
    p_conv = np.where(ad, np.clip(np.nan_to_num(pred[C.PRED_CONV]), 0, 1), 0.0)
    u = np.random.default_rng(seed).random((n, 3))
    click = (u[:, 0] < p_click).astype(np.float64)
    long_click = click * (u[:, 1] < p_long)
    conv = click * (u[:, 2] < p_conv)
    optimised = np.select([campaign == 0, campaign == 1], [click, conv], default=1.0)  # Eq. 3.3
    revenue = np.where(ad, np.nan_to_num(bid) * optimised, 0.0)
    drawn = {C.REVENUE: revenue, C.CLICK: click, C.LONG_CLICK: long_click, C.CONV: conv}
    joined = df[list(EVENTS)].notna().all(axis=1).to_numpy()  # (n,) already has its events
    for c, values in drawn.items():
        df[c] = np.where(joined, df[c].to_numpy(dtype=float, na_value=np.nan), values)
    df[C.CAMPAIGN] = campaign
    df[C.BID] = np.where(ad, bid, 0.0)
    for c in (C.PRED_CLICK, C.PRED_LONG, C.PRED_CONV):
        df[c] = np.where(ad, pred[c], 0.0)
    return df
