"""DRL-PUT configuration: simulator, action space, reward, behaviour logging, network, training.

Every section is a frozen dataclass (one docstring per field, validated in ``__post_init__``);
YAML and ``--set sim.n_ads=12`` override the defaults, unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from adray.config import Config, check
from adray.workload import TrainConfig

PARAMS = ("w_click", "w_long", "w_conv", "reserve")
"""The utility parameters of Eq. 3.1 that an action sets: the weights of the predicted click,
long-click and conversion probabilities, and the reserve threshold on the value term."""
CAMPAIGNS = ("click", "conversion", "impression")
"""Campaign types, by the action an advertiser pays for (index = ``campaign`` code)."""
MAX_ACTIONS = 4096
"""Largest |A| = n^G accepted: the policy's softmax and the evaluation's per-request table of
every action's reward grow with it, and the logs must still show each action many times."""


@dataclasses.dataclass(frozen=True)
class SimConfig(Config):
    """The ad-request simulator (sim.py): users, context, candidate ads, ranking-model errors."""

    n_ads: int = 8
    """Candidate ads per request (after retrieval; the utility picks one to show)."""
    campaign_mix: tuple[float, float, float] = (0.45, 0.3, 0.25)
    """Share of click, conversion and impression campaigns among candidates (home surface)."""
    base_ctr: float = 0.1
    """Click probability of an average user on an average ad at an average hour."""
    base_long: float = 0.3
    """P(long click | click) of an average user and ad (daytime)."""
    base_cvr: float = 0.2
    """P(conversion | click) of an average user and ad (daytime)."""
    persona_mix: tuple[float, float, float, float] = (0.4, 0.2, 0.2, 0.2)
    """Shares of the user segments casual, browser, shopper, clicker (sim.PERSONAS)."""
    persona_strength: float = 1.5
    """Scale of the segments' mean propensities (0: one homogeneous population)."""
    user_spread: float = 0.4
    """Std of the users' click / long-click / conversion propensities within a segment (logit)."""
    ad_spread: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Std of the ads' click / long-click / conversion qualities (logit scale)."""
    bid_spread: float = 0.3
    """Std of the log bids around each campaign type's median bid."""
    organic_lift: float = 1.0
    """Click logit lift of the organic item over an average ad (it is ranked for engagement)."""
    organic_user: float = 1.0
    """How much of the user's dwell propensity carries over to the organic item (0: organic
    engagement is the same for everyone, so the organic item beats ads for users who rarely engage
    with ads; 1: dwellers engage with organic items as much as with ads)."""
    night_long_lift: float = 1.5
    """Seasonality: logit lift of P(long click | click) at 2 am (cosine over the day, 0 at 2 pm)."""
    evening_cvr_lift: float = 1.5
    """Seasonality: logit lift of P(conversion | click) around 8 pm (Gaussian bump, 3 h wide)."""
    ctr_shrink: float = 0.6
    """Personalisation: the CTR model captures only (1 - shrink) of a user's click propensity
    (cold-start models regress users to the mean), so clicks of high-CTR users are under-predicted."""
    long_shrink: float = 1.0
    """Personalisation: the same for the long-click model and the user's dwell propensity."""
    cvr_shrink: float = 0.6
    """Personalisation: the same for the CVR model and the user's conversion propensity."""
    bid_quality_corr: float = 0.5
    """Correlation of an ad's log bid with its long-click quality, negated: high bidders have worse
    landing pages, so revenue and user value pull the utility in different directions."""
    light_user_bias: float = 0.6
    """Personalisation: the CTR model over-predicts light users (few past impressions) by this
    logit offset times (1 - 2·activity) (activity in [0, 1]): heavy users are under-predicted."""
    night_long_bias: float = 1.0
    """Seasonality: the long-click model is trained on daytime traffic and misses this fraction of
    the night lift of P(long click | click)."""
    evening_cvr_bias: float = 1.0
    """Seasonality: the CVR model misses this fraction of the evening lift of P(conversion | click)."""
    pred_noise: float = 0.3
    """Std of the ranking models' per-ad prediction noise (logit scale)."""
    max_history: int = 400
    """Past impressions of the most active user (the historical CTR/CVR/spend features)."""

    def __post_init__(self) -> None:
        check(2 <= self.n_ads <= 64, f"sim.n_ads={self.n_ads}: expected 2..64")
        check(len(self.persona_mix) == 4 and all(p >= 0 for p in self.persona_mix)
              and abs(sum(self.persona_mix) - 1) < 1e-6,
              f"sim.persona_mix={self.persona_mix}: expected 4 shares >= 0 summing to 1")
        check(len(self.campaign_mix) == 3 and all(p >= 0 for p in self.campaign_mix)
              and abs(sum(self.campaign_mix) - 1) < 1e-6,
              f"sim.campaign_mix={self.campaign_mix}: expected 3 shares >= 0 summing to 1")
        for name in ("base_ctr", "base_long", "base_cvr"):
            v = getattr(self, name)
            check(0 < v < 1, f"sim.{name}={v}: expected a probability in (0, 1)")
        check(len(self.ad_spread) == 3 and min(self.ad_spread) >= 0,
              f"sim.ad_spread={self.ad_spread}: expected 3 numbers >= 0")
        for name in ("user_spread", "pred_noise", "persona_strength", "bid_spread", "organic_lift", "organic_user", "night_long_lift",
                     "evening_cvr_lift", "light_user_bias"):
            check(getattr(self, name) >= 0, f"sim.{name}={getattr(self, name)}: expected >= 0")
        for name in ("ctr_shrink", "long_shrink", "cvr_shrink", "night_long_bias", "evening_cvr_bias",
                     "bid_quality_corr"):
            v = getattr(self, name)
            check(0 <= v <= 1, f"sim.{name}={v}: expected in [0, 1]")
        check(self.max_history >= 10, f"sim.max_history={self.max_history}: expected >= 10")


@dataclasses.dataclass(frozen=True)
class ActionConfig(Config):
    """The discretised, grouped action space (Sec. 3.3): |A| = n_values ^ len(groups)."""

    n_values: int = 5
    """n: equally spaced values per parameter range (both ends included)."""
    groups: tuple[tuple[str, ...], ...] = (("w_click", "w_long"), ("w_conv",), ("reserve",))
    """Related parameters share one value index; every parameter of PARAMS in exactly one group.
    Ungrouped = one group per parameter."""
    w_click: tuple[float, float] = (0.0, 3.0)
    """Range of the weight of the predicted click probability."""
    w_long: tuple[float, float] = (0.0, 8.0)
    """Range of the weight of the predicted long-click probability."""
    w_conv: tuple[float, float] = (0.0, 16.0)
    """Range of the weight of the predicted conversion probability."""
    reserve: tuple[float, float] = (0.0, 0.8)
    """Range of the reserve threshold on the value term bid·p_opt (in bid units per impression)."""
    production: tuple[float, float, float, float] = (0.75, 2.0, 4.0, 0.2)
    """The hand-tuned production values of (w_click, w_long, w_conv, reserve): the centre of the
    Gaussian behaviour policy."""

    def __post_init__(self) -> None:
        check(self.n_values >= 2, f"action.n_values={self.n_values}: expected >= 2")
        flat = [p for g in self.groups for p in g]
        check(sorted(flat) == sorted(PARAMS) and all(self.groups),
              f"action.groups={self.groups}: expected non-empty groups covering each of {PARAMS} once")
        size = self.n_values ** len(self.groups)
        check(size <= MAX_ACTIONS, f"action.n_values={self.n_values} with {len(self.groups)} groups gives "
              f"|A| = {self.n_values}^{len(self.groups)} = {size} actions; the limit is {MAX_ACTIONS} "
              "(lower n_values or group more parameters)")
        for name in PARAMS:
            lo, hi = getattr(self, name)
            check(0 <= lo < hi, f"action.{name}=({lo}, {hi}): expected 0 <= low < high")

    @property
    def num_actions(self) -> int:
        return self.n_values ** len(self.groups)


@dataclasses.dataclass(frozen=True)
class RewardConfig(Config):
    """The reward (Eq. 3.2-3.4) and its variants R0-R4 (Sec. 6.2.3)."""

    variant: Literal["R0", "R1", "R2", "R3", "R4"] = "R0"
    """R0: revenue + per-campaign user value; R1: revenue only; R2: one (alpha, beta) for all
    campaigns, no conversion term; R3: R2 but impression campaigns get no user value and their
    revenue scaled by impression_scale; R4: R3 but conversion campaigns' user value is gamma·conv only."""
    alpha: tuple[float, float, float] = (1.0, 0.5, 1.0)
    """R0: weight of the click in the user value, per campaign type (click, conversion, impression)."""
    beta: tuple[float, float, float] = (2.0, 1.0, 2.0)
    """R0: weight of the long click, per campaign type."""
    gamma: tuple[float, float, float] = (0.0, 4.0, 0.0)
    """R0: weight of the conversion, per campaign type."""
    shared_alpha: float = 1.0
    """R2-R4: the one click weight of every campaign type."""
    shared_beta: float = 2.0
    """R2-R4: the one long-click weight of every campaign type."""
    impression_scale: float = 2.0
    """R3-R4: revenue multiplier of impression campaigns (compensates their lost user value)."""
    conv_gamma: float = 4.0
    """R4: weight of the conversion in conversion campaigns' user value (the only term left)."""
    organic: float = 1.5
    """User value of the organic item shown when no ad clears the reserve, as a multiple of the
    click campaign's (alpha, beta) applied to its click and long click (0: worthless)."""

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            v = getattr(self, name)
            check(len(v) == 3 and all(x >= 0 for x in v), f"reward.{name}={v}: expected 3 numbers >= 0")
        for name in ("shared_alpha", "shared_beta", "impression_scale", "conv_gamma", "organic"):
            check(getattr(self, name) >= 0, f"reward.{name}={getattr(self, name)}: expected >= 0")


@dataclasses.dataclass(frozen=True)
class BehaviourConfig(Config):
    """The behaviour (logging) policy of the logged data (Sec. 5)."""

    policy: Literal["uniform", "gaussian"] = "uniform"
    """uniform over A (the paper's choice), or a discretised Gaussian around action.production."""
    sigma: float = 0.25
    """Gaussian: std of each group's value index as a fraction of the index range (n_values - 1)."""
    n_requests: int = 300_000
    """Logged requests (rows) written by make_data."""
    val_fraction: float = 0.1
    """Share of logged requests held out as split ``val``: the off-policy estimate on it chooses the
    model (the best iteration, and the objective ``adray tune drlput`` maximises)."""
    test_fraction: float = 0.1
    """Share of logged requests held out as split ``test``: the off-policy estimates, Diversity and
    Relative_Gain reported for the chosen model; never used to choose one."""
    model_versions: str = "ctr=sim-v1,long=sim-v1,cvr=sim-v1"
    """The ranking models' versions written in every log row (what the serving graph records)."""

    def __post_init__(self) -> None:
        check(self.sigma > 0, f"behaviour.sigma={self.sigma}: expected > 0")
        check(self.n_requests >= 100, f"behaviour.n_requests={self.n_requests}: expected >= 100")
        check(0 < self.val_fraction and 0 < self.test_fraction and self.val_fraction + self.test_fraction < 0.9,
              f"behaviour.val_fraction={self.val_fraction}, behaviour.test_fraction={self.test_fraction}: "
              "expected each > 0 and together < 0.9 (the rest is the train split)")


@dataclasses.dataclass(frozen=True)
class DRLPUTConfig(TrainConfig):
    """DRL-PUT (ranking-utility tuning by policy gradient): simulator, actions, reward, logs, training."""

    sim: SimConfig = SimConfig()
    """The ad-request simulator."""
    action: ActionConfig = ActionConfig()
    """The discretised, grouped action space."""
    reward: RewardConfig = RewardConfig()
    """The reward and its variant."""
    behaviour: BehaviourConfig = BehaviourConfig()
    """The behaviour policy of the logged data."""

    # ---------------------------------------------------------------- network (model.py)
    embed_dim: int = 8
    """Embedding size of each categorical state feature."""
    hidden: tuple[int, ...] = (64, 64)
    """Widths of the batch-norm / linear / ReLU blocks of the policy (and critic) MLP."""

    # ---------------------------------------------------------------- training (train.py)
    algorithm: Literal["reinforce", "actor_critic"] = "reinforce"
    """REINFORCE with gamma = 0 (Eq. 4.1, the paper's choice) or actor-critic (advantage r - V(s)
    with a learned critic V as baseline)."""
    importance: Literal["none", "inverse", "ratio"] = "none"
    """Weight of each logged sample (see train.py for which gradient is unbiased under which
    behaviour policy): none (Eq. 4.1 as printed), inverse = 1/(|A|·mu(a|s)), ratio = pi(a|s)/mu(a|s)."""
    reward_signal: Literal["events", "predicted"] = "events"
    """User value (Eq. 3.4) from the shown item's realised events, or from the ranking models'
    predicted probabilities min-max normalised per batch (the paper)."""
    normalise: bool = True
    """Min-max normalise each batch's total reward to [0, 1] (Sec. 3.5)."""
    lr: float = 1e-3
    """Adam learning rate (policy and critic)."""
    batch_size: int = 1024
    """B of Eq. 4.1: logged requests per gradient step (and per min-max normalisation)."""
    updates_per_iteration: int = 20
    """Gradient steps per ``Algorithm.train()`` call."""
    held_out_rows: int = 1_000_000
    """At most this many rows of each held-out split (``val``, ``test``: their first rows in file order)
    are read for the per-iteration estimates and the test report (bounded memory at any log size)."""
    buffer_rows: int = 262_144
    """Rows of the train logs the sampler's shuffle buffer holds at most (``adray.rl.StreamSampler``:
    blocks of the split's Parquet row groups in a seeded random order; every row once an epoch)."""
    iterations: int = 10
    """RLlib ``Algorithm.train()`` calls (one report each)."""
    entropy_coeff: float = 0.0
    """Weight of an entropy bonus on pi(.|s) (ours; 0 = the paper's loss)."""
    vf_coeff: float = 1.0
    """Actor-critic: weight of the critic's squared error in the loss."""
    grad_clip: float = 0.0
    """Clip the gradient norm to this value; 0 disables clipping."""
    online: bool = False
    """Train online in the simulator (RLlib's EnvRunner samples pi(.|s) in AdRequestEnv) instead of
    from the logged Parquet."""
    selection: Literal["paired", "argmax"] = "paired"
    """Which iteration is kept, from the SNIPS of its serving rule on the ``val`` logs (never from
    simulator truth; selection.py): ``paired``: the last, unless an earlier one is better with
    confidence (paired bootstrap bound, 5% family-wise); ``argmax``: the best estimate."""

    # ---------------------------------------------------------------- evaluation (evaluate.py)
    eval_requests: int = 4000
    """Fresh simulated requests per evaluation seed (true expected reward of each policy)."""
    eval_seeds: int = 3
    """Evaluation seeds (mean ± std over them)."""
    diversity_threshold: float = 0.1
    """δ of Eq. 6.1: a policy whose Diversity is below it fails (predicts almost one action)."""
    serve_epsilon: float = 0.0
    """Serving: share of requests whose action is drawn uniformly (exploration for the next
    version's logs; the rest get the argmax). Propensities in the answers follow it."""

    def __post_init__(self) -> None:
        check(self.embed_dim >= 1 and len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
              f"embed_dim={self.embed_dim}, hidden={self.hidden}: expected >= 1 and at least one layer")
        check(self.lr > 0, f"lr={self.lr}: expected > 0")
        check(self.held_out_rows >= 1, f"held_out_rows={self.held_out_rows}: expected >= 1")
        check(self.buffer_rows >= self.batch_size,
              f"buffer_rows={self.buffer_rows}: expected >= batch_size={self.batch_size}")
        check(self.batch_size >= 2, f"batch_size={self.batch_size}: expected >= 2 (batch norm, min-max)")
        check(self.updates_per_iteration >= 1 and self.iterations >= 1,
              f"updates_per_iteration={self.updates_per_iteration}, iterations={self.iterations}: expected >= 1")
        for name in ("entropy_coeff", "vf_coeff", "grad_clip"):
            check(getattr(self, name) >= 0, f"{name}={getattr(self, name)}: expected >= 0")
        check(self.eval_requests >= 10 and self.eval_seeds >= 1, "eval_requests >= 10 and eval_seeds >= 1 expected")
        check(0 <= self.diversity_threshold < 1, f"diversity_threshold={self.diversity_threshold}: expected in [0, 1)")
        check(0 <= self.serve_epsilon <= 1, f"serve_epsilon={self.serve_epsilon}: expected in [0, 1]")
