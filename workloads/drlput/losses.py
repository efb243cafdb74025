"""The DRL-PUT losses (Sec. 4.3), as plain torch functions of a batch of logged (s, a, r, μ).

REINFORCE with γ = 0 on logged one-step episodes, the batch-averaged gradient of Eq. 4.1:

    θ <- θ + α · (1/B) Σ_b w_b · (r_b - b(s_b)) · ∇θ log π_θ(a_b | s_b)                    (4.1)

as the loss ``L = -(1/B) Σ_b w_b (r_b - b(s_b)) log π(a_b|s_b)`` (b = 0 for REINFORCE; the learned
critic V(s) for actor-critic, trained by ``(V(s_b) - r_b)^2``). With r >= 0 (min-max normalised),
what each importance weight w makes the expected gradient, for logged actions a ~ μ(·|s):

* ``none`` (w = 1, Eq. 4.1 as printed): E_μ[r ∇log π] = ∇ Σ_a μ(a|s) r(s,a) log π(a|s), the
  gradient of a reward-weighted log-likelihood, NOT of the policy's value. Its maximiser is
  π(a|s) ∝ μ(a|s) r(s,a), so the served argmax is the best action only when μ is uniform: under
  the uniform behaviour policy the paper's estimator is consistent for the argmax policy; under
  the Gaussian one it is biased towards the production values (μ is large there) -- Table 1.
* ``inverse`` (w = 1 / (|A| μ(a|s))): E_μ[w r ∇log π] = (1/|A|) Σ_a r ∇log π: the uniform-logging
  objective (maximiser π ∝ r) under ANY behaviour policy with full support; higher variance
  where μ is small.
* ``ratio`` (w = π(a|s) / μ(a|s), π detached): E_μ[w r ∇log π] = Σ_a π r ∇log π = ∇ E_{a~π}[r]:
  the true policy gradient of the policy's value (off-policy policy gradient, Degris et al.
  2012), unbiased under any μ with full support; it drives π towards a deterministic policy.

A baseline b(s) leaves the gradient unbiased only with ``ratio`` (Σ_a π ∇log π = 0); with
``none``/``inverse`` it shifts the objective to Σ_a μ (r - b) log π, whose maximiser drives every
action below the baseline to probability 0 -- one reason the actor-critic variant can fail here.
"""

from __future__ import annotations

import torch


def importance_weights(logits: torch.Tensor, actions: torch.Tensor, behaviour_prob: torch.Tensor,
                       mode: str) -> torch.Tensor:
    """w (B,) for ``mode`` in {none, inverse, ratio}; logits (B, A), actions (B,), μ(a|s) (B,)."""
    if mode == "none":
        return torch.ones_like(behaviour_prob)
    if mode == "inverse":
        return 1.0 / (logits.shape[-1] * behaviour_prob)
    if mode == "ratio":
        pi = torch.softmax(logits.detach(), dim=-1).gather(1, actions.long()[:, None]).squeeze(1)
        return pi / behaviour_prob
    raise ValueError(f"importance={mode!r}: expected none, inverse or ratio")


def policy_gradient_loss(logits: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                         weights: torch.Tensor, baseline: torch.Tensor | None = None) -> torch.Tensor:
    """-(1/B) Σ_b w_b (r_b - b_b) log π(a_b|s_b)  (Eq. 4.1); the baseline is not differentiated."""
    logp = torch.log_softmax(logits, dim=-1).gather(1, actions.long()[:, None]).squeeze(1)  # (B,)
    adv = rewards if baseline is None else rewards - baseline.detach()
    return -(weights * adv * logp).mean()


def critic_loss(values: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """Mean squared error of V(s_b) against the one-step return r_b (γ = 0)."""
    return torch.mean((values - rewards) ** 2)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of π(·|s) over the batch."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()
