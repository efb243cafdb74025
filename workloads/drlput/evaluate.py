"""Evaluation: the paper's offline metrics on held-out logs, off-policy estimates, and simulator truth.

On the held-out logs (split ``val``) of the behaviour policy μ, for a learned policy served as the
argmax of π(·|s) (Sec. 4.2):

    Diversity      = 1 - (count of the most frequently predicted action) / N              (6.1)
                     fails when below ``diversity_threshold`` (δ)
    Relative_Gain  = mean(r | a_logged = a_policy) / mean(r) - 1                          (6.2)
                     fails when <= 0. Under uniform logging it is the replay estimate of the
                     policy's value over the behaviour policy's (with μ non-uniform it is biased).
    ips, snips, dr = ``adray.ope`` with π(a|s) = 1[a = a_policy(s)] and the logged μ(a|s); DR's
                     reward model q̂(s, a) is the mean logged reward of action a (a direct method
                     that ignores the state: DR is then IPS with a per-action control variate).

The truth, on fresh simulated requests (``eval_seeds`` x ``eval_requests``, mean ± std over
seeds): the true expected ``reward`` per request and the shown items' ``ctr``, ``long_ctr``,
``cvr`` (conversions per request) and ``revenue`` (truth.py), for the model, every model of
``others``, and the baselines ``uniform``, ``best_fixed`` and ``oracle``.
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
from workloads.drlput.data import read_split
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

VALIDATION_SEED = 7_777_777


def policy_net(model: Any) -> torch.nn.Module:
    """The PolicyNet of a DRLPUTModule (or the net itself)."""
    return getattr(model, "policy", model)


def action_probs(model: Any, obs: np.ndarray, batch: int = 8192) -> np.ndarray:
    """π(·|s) (N, |A|) in eval mode (batch norm on its running statistics)."""
    net = policy_net(model)
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = [torch.softmax(net(torch.as_tensor(obs[i : i + batch], dtype=torch.float32, device=device)), -1)
                   .cpu().numpy() for i in range(0, len(obs), batch)]
    finally:
        net.train(was_training)
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


def offline_metrics(cfg: DRLPUTConfig, model: Any, logs: pd.DataFrame, q_per_action: np.ndarray | None = None
                    ) -> dict[str, float]:
    """Diversity, Relative_Gain (with pass/fail) and IPS/SNIPS/DR of the argmax policy on logs."""
    chosen = action_probs(model, state_obs(logs)).argmax(1)
    logged, mu = logs[C.ACTION].to_numpy(), logs[C.PROPENSITY].to_numpy(np.float64)
    r = logged_reward(cfg, logs)
    pi = (chosen == logged).astype(np.float64)
    if q_per_action is None:
        q_per_action = np.bincount(logged, weights=r, minlength=cfg.action.num_actions) / np.maximum(
            np.bincount(logged, minlength=cfg.action.num_actions), 1)
    div, rg = diversity(chosen), relative_gain(chosen, logged, r)
    return {"diversity": div, "diversity_pass": float(div >= cfg.diversity_threshold),
            "relative_gain": rg, "relative_gain_pass": float(rg > 0),
            "ips": ope.ips(r, pi, mu).value, "snips": ope.snips(r, pi, mu).value,
            "dr": ope.dr(r, pi, mu, q_per_action[logged], q_per_action[chosen]).value,
            "matched_rows": float(pi.sum())}


def true_metrics(cfg: DRLPUTConfig, model: Any, n: int, seed: int) -> dict[str, float]:
    """METRICS of the model's argmax policy on ``n`` fresh requests drawn with ``seed``."""
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
    """``{method: {metric: value}}``: ``drlput`` (the model) and each of ``others`` (true METRICS and
    the offline metrics on the ``val`` logs), ``uniform``, ``best_fixed`` and ``oracle`` (true METRICS)."""
    space = ActionSpace(cfg.action)
    logs = read_split(cfg, data_dir, "val")
    train = read_split(cfg, data_dir, "train", (C.ACTION, *C.OUTCOME))
    r_train, a_train = logged_reward(cfg, train), train[C.ACTION].to_numpy()
    q_hat = np.bincount(a_train, weights=r_train, minlength=space.size) / np.maximum(
        np.bincount(a_train, minlength=space.size), 1)
    out: dict[str, dict[str, float]] = {}
    for name, m in {"drlput": model, **dict(others or {})}.items():
        def learned(req: Any, m: Any = m) -> dict[str, float]:
            return policy_metrics(cfg, req, space, action_probs(m, observe(req)).argmax(1))

        out[name] = {**_seeds(cfg, learned), **offline_metrics(cfg, m, logs, q_hat)}
    fixed = best_fixed_action(cfg, space)
    out["uniform"] = _seeds(cfg, lambda req: uniform_metrics(cfg, req, space))
    out["best_fixed"] = _seeds(cfg, lambda req: policy_metrics(cfg, req, space, np.full(len(req), fixed)))
    out["oracle"] = _seeds(cfg, lambda req: policy_metrics(cfg, req, space, reward_table(cfg, req, space).argmax(1)))
    return out


__all__ = ["METRICS", "evaluate", "offline_metrics", "true_metrics", "diversity", "relative_gain"]
