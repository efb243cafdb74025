"""DRL-PUT's inputs to the promotion gate (``adray models promote drlput@vX --gate ope``).

Given the candidate and the serving version (inference module, config, meta) and the decision-log
rows the serving version decided, :func:`gate_data` returns, per logged request i with its
outcome joined:

    r_i            the reward of the SERVING version's config (reward.py, Eq. 3.2-3.4, from the
                   events, unnormalised): the yardstick that produced the log. A candidate whose
                   ``reward`` section differs is refused by name (``adray.workload.same_section``).
    π(a_i|s_i)     the candidate's serving rule, exactly as ``UtilityPolicy.decide``:
                   (1-ε_c)·1[a_i = argmax_a π(a|s_i)] + ε_c/|A|, ε_c = the candidate's ``serve_epsilon``
    μ(a_i|s_i)     the logged propensity, checked against the serving version's rule: with its
                   ``serve_epsilon`` ε_s it must be 1-ε_s+ε_s/|A| or ε_s/|A| (1 when ε_s = 0)
    u_i            the candidate's mass off the logging policy's support: 0 when ε_s > 0 (every
                   action has μ >= ε_s/|A|), else 1 - π(a_i|s_i) (a deterministic serving rule
                   takes only the logged action)
    floor          0: every reward variant is a sum of non-negative terms

and no DR terms: the served module is the policy network alone (the actor-critic's critic is not
exported, and it is V(s) of the training policy, not the q̂(s, a) of the logged action DR needs).

Rows are checked: the action's logged parameter values must be the candidate's action space's
(else the action ids mean other weights and the estimate would be meaningless).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from adray.data import DataError
from adray.workload import GateData, GateMismatch, GateModel, same_section
from workloads.drlput import columns as C
from workloads.drlput.config import PARAMS
from workloads.drlput.evaluate import action_probs
from workloads.drlput.policy import UtilityPolicy
from workloads.drlput.reward import reward

EVENTS = (C.REVENUE, C.CLICK, C.LONG_CLICK, C.CONV)
NEEDED = (*C.STATE, C.ACTION, C.PROPENSITY, *C.PARAM_COLUMNS, C.CAMPAIGN, *EVENTS)
ROWS_PER_CHANGE = 30
"""Logged rows the advice aims at for each kind of changed decision (as the old ESS floor)."""


def gate_data(candidate: GateModel, serving: GateModel, rows: pa.Table) -> GateData:
    """See the module docstring. Rows without a logged action or without joined events are skipped
    and counted; a missing column, an action outside the candidate's space or propensities the
    serving rule cannot have logged are a DataError; another reward or action space a GateMismatch."""
    missing = [c for c in NEEDED if c not in rows.column_names]
    if missing:
        raise DataError(f"decision log: missing column(s) {missing} that the drlput gate needs "
                        f"(the utility stage's columns, workloads/drlput/columns.py)")
    same_section(candidate.cfg, serving.cfg, "reward", candidate.ref, serving.ref)
    cand = UtilityPolicy(candidate.model, candidate.cfg, candidate.meta, candidate.ref)
    logger = UtilityPolicy(serving.model, serving.cfg, serving.meta, serving.ref)
    if cand.space.size != logger.space.size or not np.allclose(cand.space.values, logger.space.values):
        raise GateMismatch(f"{candidate.ref} and {serving.ref} have different action spaces "
                           f"({cand.space.size} vs {logger.space.size} actions, or other parameter values): "
                           "an action id of the log means other utility weights to the candidate")
    df = rows.select(list(NEEDED)).to_pandas()
    decided = df[[C.ACTION, C.PROPENSITY, *C.STATE]].notna().all(axis=1).to_numpy()
    joined = df[[C.CAMPAIGN, *EVENTS]].notna().all(axis=1).to_numpy()
    keep = decided & joined
    skipped = {k: int(v) for k, v in (("no logged action or state", (~decided).sum()),
                                       ("outcome not joined", (decided & ~joined).sum())) if v}
    df = df[keep].reset_index(drop=True)
    size, eps_c, eps_s = cand.space.size, cand.epsilon, logger.epsilon
    actions = df[C.ACTION].to_numpy(np.int64)  # (n,)
    bad = np.flatnonzero((actions < 0) | (actions >= size))
    if len(bad):
        raise DataError(f"decision log: action {actions[bad[0]]} (row {bad[0]} of the kept rows) is outside the "
                        f"candidate's action space of {size} actions")
    logged = df[list(C.PARAM_COLUMNS)].to_numpy(np.float64)  # (n, 4) in PARAMS order
    off = np.flatnonzero(~np.isclose(cand.space.values[actions][:, [PARAMS.index(p) for p in C.PARAM_COLUMNS]],
                                     logged, rtol=1e-6, atol=1e-6).all(1))
    if len(off):
        raise DataError(f"decision log: {len(off)} row(s) logged parameter values that the candidate's action "
                        f"space gives other values (first: action {actions[off[0]]} logged {logged[off[0]].tolist()}); "
                        "the serving version used another action space, so its actions cannot be valued")
    mu = df[C.PROPENSITY].to_numpy(np.float64)
    allowed = np.array([1.0]) if eps_s == 0 else np.array([1 - eps_s + eps_s / size, eps_s / size])
    wrong = np.flatnonzero(~np.isclose(mu[:, None], allowed[None, :], rtol=1e-6, atol=1e-9).any(1))
    if len(wrong):
        raise DataError(f"decision log: {len(wrong)} row(s) logged a propensity that {serving.ref}'s serving rule "
                        f"(serve_epsilon={eps_s:g} over {size} actions) cannot give: it gives "
                        f"{', '.join(f'{a:.6g}' for a in allowed)}; row {wrong[0]} of the kept rows logged "
                        f"{mu[wrong[0]]:.6g}. Were these rows decided by another configuration of {serving.ref}?")
    obs = df[list(C.STATE)].to_numpy(np.float32)  # (n, len(STATE))
    greedy = action_probs(candidate.model, obs).argmax(1) if len(df) else np.zeros(0, np.int64)  # (n,)
    target = (1 - eps_c) * (actions == greedy) + eps_c / size  # as UtilityPolicy.decide
    r = reward({k: df[k].to_numpy(np.float64) for k in (C.CAMPAIGN, *EVENTS)}, serving.cfg.reward)
    unsupported = np.zeros(len(df)) if eps_s > 0 else 1.0 - target
    return GateData(rewards=np.asarray(r, np.float64), target_prob=target.astype(np.float64), logging_prob=mu,
                    unsupported=unsupported, reward_floor=0.0, skipped=skipped,
                    advice=_advice(serving.ref, eps_s, size, len(df), float((greedy != actions).mean()) if len(df) else 1.0))


def _advice(serving_ref: str, eps: float, size: int, n: int, changed: float) -> str:
    """Exploration that would let the log value a candidate whose greedy action differs from the
    logged one on a share ``changed`` of ``n`` rows: about ROWS_PER_CHANGE rows on which the uniform
    draw hit the candidate's action, i.e. ε·n·changed/|A| >= ROWS_PER_CHANGE."""
    changed = max(changed, 1.0 / max(n, 1))
    need = ROWS_PER_CHANGE * size / (max(n, 1) * changed)
    if need <= 1:
        return (f"serve with serve_epsilon >= {need:.2f} ({serving_ref} serves with {eps:g}) so that about "
                f"{ROWS_PER_CHANGE} logged rows show the candidate's changed decisions ({100 * changed:.0f}% of "
                f"{n} rows, {size} actions)")
    rows = int(np.ceil(ROWS_PER_CHANGE * size / (0.3 * changed)))
    return (f"log more rows with exploration ({serving_ref} serves with serve_epsilon {eps:g}): the candidate "
            f"changes {100 * changed:.0f}% of the greedy decisions over {size} actions, so serve_epsilon 0.3 "
            f"needs about {rows} rows")
