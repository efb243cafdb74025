"""Evaluation: the paper's offline metrics on held-out logs, off-policy estimates, and simulator truth.

On held-out logs of the behaviour policy μ (:func:`offline_metrics`), for a learned policy served
as the argmax of π(·|s) (Sec. 4.2), ε-greedy with ``serve_epsilon`` = ε:

    Diversity      = 1 - (count of the most frequently predicted action) / N              (6.1)
                     fails when below ``diversity_threshold`` (δ)
    Relative_Gain  = mean(r | a_logged = a_policy) / mean(r) - 1                          (6.2)
                     fails when <= 0. Under uniform logging it is the replay estimate of the
                     policy's value over the behaviour policy's (with μ non-uniform it is biased).
    ips, snips, dr = ``adray.ope`` of the serving rule: π(a|s) = (1-ε)·1[a = a_policy(s)] + ε/|A|
                     (what ``UtilityPolicy`` serves and the promotion gate values), the logged
                     μ(a|s), and the config's reward of the logged events, unnormalised (reward.py).
                     DR's reward model q̂(s, a) is the mean reward of action a on the ``train``
                     split (:func:`reward_per_action`; a direct method that ignores the state: DR
                     is then IPS with a per-action control variate).

These need only logs, so training may use them: SNIPS on split ``val`` chooses the model (which
iteration is kept, selection.py, and the tuner's objective ``val_snips``; train.py), and the same
metrics on split ``test`` are reported with the prefix ``test_`` by the trainer and by
:func:`evaluate`.

The truth, for evaluation only (never for training or for choosing a model: the training path is
run with these functions made to raise, tests/workloads/test_no_truth_drlput.py): on fresh
simulated requests (``eval_seeds`` x ``eval_requests``, mean ± std over seeds), the true expected
``reward`` per request and the shown items' ``ctr``, ``long_ctr``, ``cvr`` (conversions per
request) and ``revenue`` (truth.py), for the model, every model of ``others``, and the baselines
``uniform``, ``best_fixed`` and ``oracle``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from adray import ope
from workloads.drlput import columns as C
from workloads.drlput.actions import ActionSpace
from workloads.drlput.config import DRLPUTConfig
from workloads.drlput.logs import held_out
from workloads.drlput.reward import reward
from workloads.drlput.sim import make_requests, observe
from workloads.drlput.truth import (
    EVAL_SEED,
    METRICS,
    best_fixed_action,
    policy_metrics,
    reward_table,
    uniform_metrics,
)

OBJECTIVE = "snips"
"""The off-policy estimate on split ``val`` that chooses the model (``val_snips``)."""


def policy_net(model: Any) -> torch.nn.Module:
    """The PolicyNet of a DRLPUTModule (or the net itself)."""
    return getattr(model, "policy", model)


def action_probs(model: Any, obs: np.ndarray, batch: int = 8192) -> np.ndarray:
    """π(·|s) (N, |A|) in eval mode (batch norm on its running statistics)."""
    net = policy_net(model)
    device = next(net.parameters()).device
    was_training = net.training
    if was_training:  # a served net is in eval mode already: no walk over its modules per call
        net.eval()
    try:
        with torch.no_grad():
            out = [torch.softmax(net(torch.as_tensor(obs[i : i + batch], dtype=torch.float32, device=device)), -1)
                   .cpu().numpy() for i in range(0, len(obs), batch)]
    finally:
        if was_training:
            net.train()
    return np.concatenate(out).astype(np.float64)


def state_obs(df: pd.DataFrame) -> np.ndarray:
    """The flat observation (N, len(STATE)) of log rows (same layout as ``sim.observe``)."""
    return df[list(C.STATE)].to_numpy(np.float32)


def diversity(actions: np.ndarray) -> float:
    """Eq. 6.1: 1 - (count of the most frequent action) / N."""
    return 1.0 - np.bincount(np.asarray(actions)).max() / len(actions)


def relative_gain(policy_actions: np.ndarray, logged_actions: np.ndarray, rewards: np.ndarray) -> float:
    """Eq. 6.2: mean reward where the policy agrees with the log, over the mean reward, minus 1."""
    match = np.asarray(policy_actions) == np.asarray(logged_actions)
    if not match.any() or rewards.mean() == 0:
        return float("nan")
    return float(rewards[match].mean() / rewards.mean() - 1.0)


def logged_reward(cfg: DRLPUTConfig, df: pd.DataFrame) -> np.ndarray:
    """The configured reward variant of log rows, from their events (unnormalised)."""
    return reward({k: df[k].to_numpy() for k in C.OUTCOME}, cfg.reward)


def served_prob(greedy: np.ndarray, logged: np.ndarray, size: int, epsilon: float) -> np.ndarray:
    """π(a_logged|s) (N,) of the serving rule: (1-ε)·1[a = greedy] + ε/|A| (``adray.workload.epsilon_greedy``)."""
    return (1 - epsilon) * (np.asarray(greedy) == np.asarray(logged)) + epsilon / size


def q_per_action(cfg: DRLPUTConfig, logs: pd.DataFrame) -> np.ndarray:
    """Mean reward of each action in ``logs`` (|A|,), 0 where unlogged: DR's state-free q̂."""
    r, a, size = logged_reward(cfg, logs), logs[C.ACTION].to_numpy(), cfg.action.num_actions
    return np.bincount(a, weights=r, minlength=size) / np.maximum(np.bincount(a, minlength=size), 1)


def reward_per_action(cfg: DRLPUTConfig, data_dir: Path) -> np.ndarray:
    """:func:`q_per_action` of the ``train`` split (fitted where the policy learns, not where it is
    valued), summed block by block as the split streams (logs.scan)."""
    from workloads.drlput.logs import scan

    size = cfg.action.num_actions
    total, count = np.zeros(size), np.zeros(size)
    for b in scan(cfg, data_dir, "train", (C.ACTION, *C.OUTCOME)):
        a = b[C.ACTION].astype(np.int64)
        total += np.bincount(a, weights=reward({k: b[k] for k in C.OUTCOME}, cfg.reward), minlength=size)
        count += np.bincount(a, minlength=size)
    return total / np.maximum(count, 1)


def greedy_actions(model: Any, logs: pd.DataFrame) -> np.ndarray:
    """The model's argmax action (N,) on each log row's state."""
    return action_probs(model, state_obs(logs)).argmax(1)


def logged_weights(cfg: DRLPUTConfig, chosen: np.ndarray, logs: pd.DataFrame) -> np.ndarray:
    """Importance weights π(a|s)/μ(a|s) (N,) of the serving rule whose greedy actions are ``chosen``."""
    pi = served_prob(chosen, logs[C.ACTION].to_numpy(), cfg.action.num_actions, cfg.serve_epsilon)
    return pi / logs[C.PROPENSITY].to_numpy(np.float64)


def offline_metrics(cfg: DRLPUTConfig, model: Any, logs: pd.DataFrame, q_hat: np.ndarray | None = None
                    ) -> dict[str, float]:
    """Diversity, Relative_Gain (with pass/fail) of the argmax policy and IPS/SNIPS/DR of the serving
    rule on logs (module docstring); ``q_hat`` (|A|,) defaults to :func:`q_per_action` of ``logs``."""
    return logged_metrics(cfg, greedy_actions(model, logs), logs, q_hat)


def logged_metrics(cfg: DRLPUTConfig, chosen: np.ndarray, logs: pd.DataFrame, q_hat: np.ndarray | None = None
                   ) -> dict[str, float]:
    """:func:`offline_metrics` of the greedy actions ``chosen`` (N,). SNIPS is NaN where the rule
    puts no weight on any logged action (nothing to value it on)."""
    logged, mu = logs[C.ACTION].to_numpy(), logs[C.PROPENSITY].to_numpy(np.float64)
    r = logged_reward(cfg, logs)
    size = cfg.action.num_actions
    pi = served_prob(chosen, logged, size, cfg.serve_epsilon)
    q = q_per_action(cfg, logs) if q_hat is None else np.asarray(q_hat, np.float64)
    v = (1 - cfg.serve_epsilon) * q[chosen] + cfg.serve_epsilon * q.mean()  # E_π q̂(s, ·)
    div, rg = diversity(chosen), relative_gain(chosen, logged, r)
    snips = ope.snips(r, pi, mu).value if pi.sum() > 0 else float("nan")
    return {"diversity": div, "diversity_pass": float(div >= cfg.diversity_threshold),
            "relative_gain": rg, "relative_gain_pass": float(rg > 0),
            "ips": ope.ips(r, pi, mu).value, "snips": snips, "dr": ope.dr(r, pi, mu, q[logged], v).value,
            "matched_rows": float((chosen == logged).sum())}


def true_metrics(cfg: DRLPUTConfig, model: Any, n: int, seed: int) -> dict[str, float]:
    """METRICS of the model's argmax policy on ``n`` fresh requests drawn with ``seed`` (simulator
    truth: evaluation only)."""
    req = make_requests(cfg.sim, n, seed)
    actions = action_probs(model, observe(req)).argmax(1)
    return policy_metrics(cfg, req, ActionSpace(cfg.action), actions)


def _seeds(cfg: DRLPUTConfig, fn: Any) -> dict[str, float]:
    rows = [fn(make_requests(cfg.sim, cfg.eval_requests, EVAL_SEED + s)) for s in range(cfg.eval_seeds)]
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out.update({f"{k}_std": float(np.std([r[k] for r in rows])) for k in rows[0]})
    return out


def evaluate(cfg: DRLPUTConfig, data_dir: Path, model: Any, others: Mapping[str, Any] | None = None
             ) -> dict[str, dict[str, float]]:
    """``{method: {metric: value}}``: ``drlput`` (the model) and each of ``others`` (true METRICS of
    the argmax policy, and ``test_`` + the offline metrics on the ``test`` logs, as the trainer
    reports them), ``uniform``, ``best_fixed`` and ``oracle`` (true METRICS)."""
    space = ActionSpace(cfg.action)
    logs = held_out(cfg, data_dir, "test")  # what training reports test_* on
    q_hat = reward_per_action(cfg, data_dir)
    out: dict[str, dict[str, float]] = {}
    for name, m in {"drlput": model, **dict(others or {})}.items():
        def learned(req: Any, m: Any = m) -> dict[str, float]:
            return policy_metrics(cfg, req, space, action_probs(m, observe(req)).argmax(1))

        test = {f"test_{k}": v for k, v in offline_metrics(cfg, m, logs, q_hat).items()}
        out[name] = {**_seeds(cfg, learned), **test}
    fixed = best_fixed_action(cfg, space)
    out["uniform"] = _seeds(cfg, lambda req: uniform_metrics(cfg, req, space))
    out["best_fixed"] = _seeds(cfg, lambda req: policy_metrics(cfg, req, space, np.full(len(req), fixed)))
    out["oracle"] = _seeds(cfg, lambda req: policy_metrics(cfg, req, space, reward_table(cfg, req, space).argmax(1)))
    return out


__all__ = ["METRICS", "OBJECTIVE", "evaluate", "offline_metrics", "true_metrics", "diversity", "relative_gain"]
