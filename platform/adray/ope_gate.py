"""The promotion gate's decision: a pure function of logged rows and the candidate's probabilities.

Given n decisions logged by the serving version (behaviour policy μ), with rewards r_i under the
reward definition that produced the log, the logged propensities μ(a_i|s_i), the candidate's
probabilities π(a_i|s_i) of the same actions and the candidate's probability mass u_i on actions
μ could not take at s_i (μ(a|s_i) = 0), :func:`decide` answers one of

    promote        the log shows the candidate is not worse (or, under the strict rule, better)
    hold           it does not show that
    cannot_value   the log cannot decide: too few rows, or too much of the candidate's probability
                   mass on actions the logging policy never takes (``max_unsupported``)

Paired difference on the same rows (b = ``reward_floor``, the least reward the definition gives):

    w_i   = π(a_i|s_i) / μ(a_i|s_i)
    V_s   = mean_i r_i                                   serving, on-policy
    V_c   = b + mean_i w_i (r_i - b)                     candidate, IPS with rewards above the floor
    Δ     = V_c - V_s = mean_i d_i,   d_i = (w_i - 1)(r_i - b)
    LCB   = Δ - z_{1-α} · sd(d) / √n                     one-sided (1-α) lower confidence bound

Why this estimator: IPS is unbiased for the supported part, and measuring rewards from the floor
makes every piece of the candidate's value the log cannot see (mass off the support, or rare
high-weight actions that did not come up in this sample) count at the floor: V_c is biased
*down*, never up, so the bias can only hold a good candidate back, never promote a bad one. SNIPS
has lower variance but, when the candidate's changed decisions are rare in the log, it averages
the rows where the candidate agrees with the serving version and reports their mean as the
candidate's value: the old gate promoted a candidate changing 96% of decisions that way.

The rules (``RULES``):

* ``non_inferior`` (default): promote when LCB >= -margin·|V_s|. A candidate worse than the
  margin is promoted with probability <= α (normal approximation of the mean of d; the heavy
  right tail of d, rare large weights, makes the t statistic *smaller* when such a row appears,
  so the approximation errs towards holding; benchmarks/gate_calibration.py measures the rate).
  The margin forgives estimation noise only: a candidate with any mass off the log's support must
  show LCB > 0, so a deterministic serving log (μ = 1 on the logged action) never promotes a
  candidate that decides differently (there d_i <= 0 on every row).
* ``superior`` (strict): promote only when LCB > 0: better with confidence 1-α.

Support: u_i is given by the caller (who knows the logging policy), and is raised to
1 - π(a_i|s_i) wherever μ(a_i|s_i) = 1 (a logging policy with all its mass on the logged action
has no other action in its support), so a deterministic log is recognised without being told.
The log cannot value the candidate when mean_i u_i > ``max_unsupported``.
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from adray import ope

Rule = Literal["non_inferior", "superior"]
RULES: tuple[str, ...] = ("non_inferior", "superior")
Decision = Literal["promote", "hold", "cannot_value"]
DEFAULT_MARGIN = 0.01
"""Non-inferiority margin as a fraction of the serving value: noise the gate forgives."""
DEFAULT_ALPHA = 0.05
"""One-sided error rate of the rule (probability of promoting a candidate worse than the margin)."""
DEFAULT_MAX_UNSUPPORTED = 0.01
"""Largest share of the candidate's probability mass on actions the logging policy never takes."""
DEFAULT_MIN_ROWS = 200
LOW_ESS = 30.0
"""Below this Kish effective sample size of the weights, the report warns (the rule needs no
special case: few informative rows make sd(d) large or V_c low)."""


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """What :func:`decide` measured and decided (``to_dict`` is the report's JSON)."""

    decision: Decision
    reason: str
    rule: str
    """The rule in words, with its margin and error rate."""
    n: int
    serving: ope.Estimate
    """V_s: mean logged reward of the serving version, with its standard error."""
    candidate: ope.Estimate
    """V_c: floor-anchored IPS of the candidate (its ESS is the Kish ESS of the weights)."""
    difference: float
    """Δ = V_c - V_s."""
    difference_se: float
    lower_bound: float
    """LCB of Δ at level 1-α."""
    threshold: float
    """What LCB had to reach (-margin·|V_s|, or 0 under the strict rule / off-support mass)."""
    unsupported: float
    """mean_i u_i: the candidate's mass on actions the logging policy never takes."""
    agreement: float
    """mean_i π(a_i|s_i): how often the candidate takes the logged action."""
    snips: ope.Estimate | None = None
    """For information only (not part of the rule)."""
    warnings: tuple[str, ...] = ()

    @property
    def promoted(self) -> bool:
        return self.decision == "promote"

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("decision", "reason", "rule", "n", "difference", "difference_se",
                                             "lower_bound", "threshold", "unsupported", "agreement")}
        out.update({"serving": self.serving.to_dict(), "candidate": self.candidate.to_dict(),
                    "snips": self.snips.to_dict() if self.snips else None, "warnings": list(self.warnings)})
        return {k: _finite(v) for k, v in out.items()}


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v


def rule_text(rule: Rule, margin: float, alpha: float) -> str:
    conf = f"{100 * (1 - alpha):g}%"
    if rule == "superior":
        return (f"superior: promote when the one-sided {conf} lower bound of V(candidate) - V(serving), paired "
                f"on the same rows, is > 0 (a candidate that is not better is promoted with probability <= "
                f"{alpha:g})")
    return (f"non_inferior: promote when the one-sided {conf} lower bound of V(candidate) - V(serving), paired on "
            f"the same rows, is >= -{margin:g} x |V(serving)| (> 0 when the candidate puts mass off the log's "
            f"support); a candidate worse than the margin is promoted with probability <= {alpha:g}")


def decide(rewards: object, target_prob: object, logging_prob: object, unsupported: object | None = None, *,
           reward_floor: float = 0.0, rule: Rule = "non_inferior", margin: float = DEFAULT_MARGIN,
           alpha: float = DEFAULT_ALPHA, max_unsupported: float = DEFAULT_MAX_UNSUPPORTED,
           min_rows: int = DEFAULT_MIN_ROWS, advice: str = "", seed: int = 0,
           with_snips: bool = True) -> GateDecision:
    """The gate's decision on n logged rows (module docstring).

    Args:
        rewards: r_i (n,) under the serving version's reward definition, each >= ``reward_floor``.
        target_prob: π(a_i|s_i) (n,) of the candidate's serving rule, in [0, 1].
        logging_prob: μ(a_i|s_i) (n,), the logged propensities, in (0, 1].
        unsupported: u_i (n,) in [0, 1], the candidate's mass on actions μ gives 0 at s_i; None:
            only what the propensities show (rows with μ = 1).
        reward_floor: b, the least reward the definition can give.
        rule: ``non_inferior`` or ``superior``.
        margin: non-inferiority margin, a fraction of |V_s|.
        alpha: one-sided error rate, in (0, 0.5).
        max_unsupported: the largest mean u_i the log can value.
        min_rows: fewer rows cannot be valued.
        advice: what to change when the log cannot value the candidate (the workload's words).
        seed: of the SNIPS bootstrap (information only).
        with_snips: compute SNIPS for the report (a bootstrap: skip it in bulk calibration).

    Raises:
        ValueError: malformed arrays or settings, naming the argument.
    """
    if rule not in RULES:
        raise ValueError(f"rule={rule!r}: expected one of {list(RULES)}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha={alpha}: expected a one-sided error rate in (0, 0.5)")
    if not 0 <= margin < 1:
        raise ValueError(f"margin={margin}: expected a fraction of the serving value in [0, 1)")
    if not 0 <= max_unsupported < 1:
        raise ValueError(f"max_unsupported={max_unsupported}: expected a share in [0, 1)")
    if min_rows < 2:
        raise ValueError(f"min_rows={min_rows}: expected >= 2 (a standard error needs two rows)")
    r = np.asarray(rewards, np.float64)
    w = ope.importance_weights(target_prob, logging_prob, len(r) if r.ndim == 1 else None)
    pi, mu = np.asarray(target_prob, np.float64), np.asarray(logging_prob, np.float64)
    if r.ndim != 1 or not np.isfinite(r).all():
        raise ValueError("rewards: expected a 1-D array of finite values")
    if len(r) and r.min() < reward_floor:
        raise ValueError(f"rewards: expected every reward >= reward_floor {reward_floor:g}, found {r.min():g} "
                         f"(row {int(r.argmin())}); the floor is the least reward the definition can give")
    u = np.zeros(len(r)) if unsupported is None else np.asarray(unsupported, np.float64)
    if u.shape != r.shape or not np.isfinite(u).all() or (u < 0).any() or (u > 1 + 1e-9).any():
        raise ValueError(f"unsupported: expected {len(r)} shares in [0, 1], one per row")
    u = np.maximum(u, np.where(mu >= 1.0, 1.0 - pi, 0.0))  # μ = 1: the logged action is the whole support
    text = rule_text(rule, margin, alpha)
    n = len(r)
    serving = _mean_estimate(r)
    x = w * (r - reward_floor)
    candidate = dataclasses.replace(_mean_estimate(x), value=reward_floor + float(x.mean()) if n else math.nan,
                                    ess=_kish(w))
    d = (w - 1.0) * (r - reward_floor)  # (n,) paired differences
    diff = float(d.mean()) if n else math.nan
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    lcb = diff - NormalDist().inv_cdf(1 - alpha) * se
    share, agree = (float(u.mean()), float(pi.mean())) if n else (0.0, 0.0)
    snips = ope.snips(r, pi, mu, seed=seed) if n and with_snips else None
    warnings = []
    if n and candidate.ess < LOW_ESS:
        warnings.append(f"the importance weights have an effective sample size of {candidate.ess:.1f} of {n} rows: "
                        "the candidate takes the logged action on few rows, so the log says little about it")
    supported_margin = margin * abs(serving.value) if n else 0.0
    threshold = 0.0 if rule == "superior" or share > 0 else -supported_margin
    common = dict(rule=text, n=n, serving=serving, candidate=candidate, difference=diff, difference_se=se,
                  lower_bound=lcb, threshold=threshold, unsupported=share, agreement=agree, snips=snips,
                  warnings=tuple(warnings))
    if n < min_rows:
        return GateDecision("cannot_value", f"{n} usable logged row(s); the gate needs at least {min_rows} "
                            f"(log more){'; ' + advice if advice else ''}", **common)
    if share > max_unsupported:
        return GateDecision("cannot_value", f"{100 * share:.1f}% of the candidate's probability mass falls on "
                            f"actions the logging policy never takes (the log's support), above the "
                            f"{100 * max_unsupported:g}% the gate accepts: the log cannot value those decisions"
                            f"{'; ' + advice if advice else ''}", **common)
    strict = rule == "superior" or share > 0
    ok = lcb > threshold if strict else lcb >= threshold
    cmp = (">" if ok else "<=") if strict else (">=" if ok else "<")
    why = (f"lower {100 * (1 - alpha):g}% bound of V(candidate) - V(serving) = {lcb:.4g} {cmp} {threshold:.4g} "
           f"(difference {diff:.4g} ± {se:.3g} s.e. over {n} paired rows")
    why += f"; {100 * share:.2f}% of the mass off the log's support, so no margin)" if share > 0 and rule != "superior" \
        else ")"
    return GateDecision("promote" if ok else "hold", why, **common)


def _mean_estimate(x: np.ndarray) -> ope.Estimate:
    n = len(x)
    if n == 0:
        return ope.Estimate(math.nan, math.inf, 0.0, 0)
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return ope.Estimate(float(x.mean()), se, float(n), n)


def _kish(w: np.ndarray) -> float:
    s2 = float((w**2).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0
