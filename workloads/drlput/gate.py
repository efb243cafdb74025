"""DRL-PUT's inputs to the promotion gate (``adray models promote drlput@vX --gate ope``).

Given the candidate version (its inference module, config, meta) and the decision-log rows decided
by the version now serving, :func:`gate_data` returns, per logged request i with its outcome joined:

    r_i            the reward of the candidate's config (reward.py, Eq. 3.2-3.4, from the events,
                   unnormalised: the gate compares mean rewards, not per-batch min-max ranks)
    π(a_i|s_i)     the candidate's serving rule, exactly as ``UtilityPolicy.decide``:
                   (1-ε)·1[a_i = argmax_a π(a|s_i)] + ε/|A|, ε = the candidate's ``serve_epsilon``
    μ(a_i|s_i)     the logged propensity

and no DR terms: the served module is the policy network alone (the actor-critic's critic is not
exported, and it is V(s) of the training policy, not the q̂(s, a) of the logged action DR needs).

Rows are checked: the action's logged parameter values must be the candidate's action space's
(else the action ids mean other weights and the estimate would be meaningless).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from adray.data import DataError
from adray.workload import GateData
from workloads.drlput import columns as C
from workloads.drlput.config import PARAMS, DRLPUTConfig
from workloads.drlput.evaluate import action_probs
from workloads.drlput.policy import UtilityPolicy
from workloads.drlput.reward import reward

EVENTS = (C.REVENUE, C.CLICK, C.LONG_CLICK, C.CONV)
NEEDED = (*C.STATE, C.ACTION, C.PROPENSITY, *C.PARAM_COLUMNS, C.CAMPAIGN, *EVENTS)


def gate_data(model: Any, cfg: DRLPUTConfig, meta: dict[str, Any], rows: pa.Table) -> GateData:
    """See the module docstring. Rows without a logged action or without joined events are skipped
    and counted; a missing column or an action outside the candidate's space is a DataError."""
    missing = [c for c in NEEDED if c not in rows.column_names]
    if missing:
        raise DataError(f"decision log: missing column(s) {missing} that the drlput gate needs "
                        f"(the utility stage's columns, workloads/drlput/columns.py)")
    df = rows.select(list(NEEDED)).to_pandas()
    decided = df[[C.ACTION, C.PROPENSITY, *C.STATE]].notna().all(axis=1).to_numpy()
    joined = df[[C.CAMPAIGN, *EVENTS]].notna().all(axis=1).to_numpy()
    keep = decided & joined
    skipped = {k: int(v) for k, v in (("no logged action or state", (~decided).sum()),
                                       ("outcome not joined", (decided & ~joined).sum())) if v}
    df = df[keep].reset_index(drop=True)
    policy = UtilityPolicy(model, cfg, meta, "candidate")  # the serving rule's action space and ε
    space, eps = policy.space, policy.epsilon
    actions = df[C.ACTION].to_numpy(np.int64)  # (n,)
    bad = np.flatnonzero((actions < 0) | (actions >= space.size))
    if len(bad):
        raise DataError(f"decision log: action {actions[bad[0]]} (row {bad[0]} of the kept rows) is outside the "
                        f"candidate's action space of {space.size} actions")
    logged = df[list(C.PARAM_COLUMNS)].to_numpy(np.float64)  # (n, 4) in PARAMS order
    off = np.flatnonzero(~np.isclose(space.values[actions][:, [PARAMS.index(p) for p in C.PARAM_COLUMNS]],
                                     logged, rtol=1e-6, atol=1e-6).all(1))
    if len(off):
        raise DataError(f"decision log: {len(off)} row(s) logged parameter values that the candidate's action "
                        f"space gives other values (first: action {actions[off[0]]} logged {logged[off[0]].tolist()}); "
                        "the serving version used another action space, so its actions cannot be valued")
    obs = df[list(C.STATE)].to_numpy(np.float32)  # (n, len(STATE))
    greedy = action_probs(model, obs).argmax(1) if len(df) else np.zeros(0, np.int64)  # (n,)
    target = (1 - eps) * (actions == greedy) + eps / space.size  # as UtilityPolicy.decide
    r = reward({k: df[k].to_numpy(np.float64) for k in (C.CAMPAIGN, *EVENTS)}, cfg.reward)
    return GateData(rewards=np.asarray(r, np.float64), target_prob=target.astype(np.float64),
                    logging_prob=df[C.PROPENSITY].to_numpy(np.float64), skipped=skipped)
