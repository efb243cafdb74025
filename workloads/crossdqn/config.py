"""Typed config of the Cross DQN workload: the simulator (nested, ``sim``), logging policy, network,
loss, training, evaluation."""

from __future__ import annotations

import dataclasses
from typing import Literal

from adray.config import Config, check
from adray.workload import TrainConfig


@dataclasses.dataclass(frozen=True)
class FeedSimConfig(Config):
    """The feed simulator (sim.py): requests, the user's clicks, orders and leaving, the reward.

    Nested under ``CrossDQNConfig.sim`` (``--set sim.eta=0.5``); stored whole in the dataset's
    manifest, so logs say which simulator wrote them.
    """

    slots: int = 5
    """K: slots per screen; the action space has 2^K actions."""
    n_ads: int = 25
    """Ads per request (ranked by bid). As many as organic items, so that the ad list does not cap
    how many ads an ad-tolerant user can be shown (with 12 it did, and personalising barely paid)."""
    n_organic: int = 25
    """Organic items per request (ranked by relevance)."""
    hist_len: int = 8
    """Length of the user's behaviour history (items clicked before)."""
    item_dim: int = 4
    """Dimension of an item's content vector."""
    base_ctr_logit: float = -1.6
    """Click logit of an average item at the top slot."""
    position_decay: float = 0.15
    """Click logit lost per slot down the screen."""
    top_ad_penalty: float = 0.3
    """Arrangement signal: an ad in the first slot of a screen is clicked this fraction less."""
    adj_ad_penalty: float = 0.35
    """Arrangement signal: an ad next to another ad is clicked this fraction less (per ad neighbour)."""
    organic_lift: float = 0.15
    """Arrangement signal: an organic item next to an ad is clicked this fraction more."""
    leave_base: float = 0.12
    """Probability that the user leaves after a screen without ads."""
    leave_per_ad: float = 0.15
    """Extra leave probability per ad on the screen, scaled by (1 - the user's ad tolerance)."""
    tol_concentration: float = 0.5
    """Ad tolerance ~ Beta(c, c) per user: c=2 mild heterogeneity (most users near 0.5); c<1 polarised
    (many users who mind ads and many who do not), as in feeds where ad tolerance varies strongly."""
    tol_ctr_gain: float = 1.6
    """Ads are clicked ``1 + gain·(tol - 0.5)`` times as often (floor 0.05): gain 1.6 -> 0.2x..1.8x."""
    arrangement_tol_gain: float = 1.0
    """Arrangement x user: the top/adjacent ad penalties are scaled by ``1 + gain·(0.5 - tol)`` (users
    who mind ads mind ad clusters more); 0 = the same penalties for everyone."""
    ad_leave_relevance: float = 1.0
    """Item-dependent ad quality: each ad's leave contribution is scaled by ``1 + w·(1 - 2·σ(rel))``
    with ``rel`` the ad's relevance to the user (irrelevant ads annoy more, relevant ones less)."""
    neighbour_similarity: float = 1.0
    """Item-level arrangement signal: an item's click logit falls by ``w·cos(x_i, x_j)`` for each
    adjacent item j (similar neighbours compete for the click, dissimilar ones set each other off),
    so *where* each ad goes pays per request, not only how many ads a screen shows. Measured with
    ``benchmarks/crossdqn_oracle.py``: at 0 an oracle restricted to one fixed pattern per ad count is
    within 0.007 reward/request of the full oracle (placement is worth nothing, and with it SACU and
    MCAU, which model placement); at 1 placement is worth +0.20 (full oracle 3.80, count-only 3.60)."""
    ad_history_len: int = 20
    """Past ad impressions behind the profile's behaviour feature ``past ad CTR`` (a binomial count
    that reveals tolerance through behaviour); 0 = the feature is 0 (hidden)."""
    tolerance_noise: float = 0.1
    """Std of the noise on the ad tolerance shown in the user profile (0: the profile shows it exactly)."""
    take_rate: float = 0.1
    """Platform fee as a fraction of the order value."""
    reserve_price: float = 0.05
    """GSP price of the last ad of the ranked list."""
    eta: float = 0.3
    """η: weight of the experience score in the reward r = r_ad + r_fee + η·r_ex (Eq. 2). The offline
    learner rebuilds the reward from the logged components with this η, so it can be swept on one
    dataset."""

    def __post_init__(self) -> None:
        check(2 <= self.slots <= 8, f"sim.slots={self.slots}: expected 2..8 (2^K actions)")
        check(self.n_ads >= 1 and self.n_organic >= self.slots, f"sim.n_ads={self.n_ads}, sim.n_organic="
              f"{self.n_organic}: expected n_ads >= 1 and n_organic >= slots")
        check(self.hist_len >= 1 and self.item_dim >= 1, "sim.hist_len and sim.item_dim: expected >= 1")
        for name in ("top_ad_penalty", "adj_ad_penalty", "leave_base"):
            v = getattr(self, name)
            check(0.0 <= v <= 1.0, f"sim.{name}={v}: expected a value in [0, 1]")
        check(self.organic_lift >= 0 and self.leave_per_ad >= 0, "sim.organic_lift, sim.leave_per_ad: expected >= 0")
        check(self.tol_concentration > 0, f"sim.tol_concentration={self.tol_concentration}: expected > 0")
        check(0.0 <= self.neighbour_similarity <= 5.0,
              f"sim.neighbour_similarity={self.neighbour_similarity}: expected in [0, 5]")
        for name in ("tol_ctr_gain", "arrangement_tol_gain", "ad_leave_relevance"):
            check(0.0 <= getattr(self, name) <= 2.0, f"sim.{name}={getattr(self, name)}: expected in [0, 2]")
        check(self.ad_history_len >= 0, f"sim.ad_history_len={self.ad_history_len}: expected >= 0")
        check(0.0 <= self.take_rate <= 1.0, f"sim.take_rate={self.take_rate}: expected in [0, 1]")
        check(self.eta >= 0, f"sim.eta={self.eta}: expected >= 0")

    @property
    def num_actions(self) -> int:
        """2^K slot patterns."""
        return 2**self.slots


@dataclasses.dataclass(frozen=True)
class CrossDQNConfig(TrainConfig):
    """Cross DQN (ads allocation in a feed): offline RLlib DQN for ``iterations`` iterations."""

    # ---------------------------------------------------------------- simulator (sim.py)
    sim: FeedSimConfig = dataclasses.field(default_factory=FeedSimConfig)
    """The feed simulator that logs the data and evaluates every policy (``sim.<field>``)."""

    # ---------------------------------------------------------------- logged data (data.py)
    n_requests: int = 3000
    """Requests logged by the exploratory policy (about 3-4 transitions each)."""
    log_pae: float = 0.4
    """Target PAE of the logging policy (mean per-slot ad probability)."""
    log_spread: float = 0.3
    """Half-width of the uniform jitter of the per-request ad probability around ``log_pae``."""

    # ---------------------------------------------------------------- network (model.py)
    embed_dim: int = 8
    """d: item embedding dimension (= MCAU channels)."""
    hidden: int = 64
    """Width of the V and A head MLPs."""
    mcau_masks: Literal["auto", "all", "pairs", "singles"] = "auto"
    """Channel combinations of MCAU: all non-empty subsets, singles+pairs, or singles; auto = all if d<=4."""
    use_sacu: bool = True
    """State and Action Cross Unit; False = the -aux-mcau-sacu ablation (Dueling DQN on [state, action])."""
    use_mcau: bool = True
    """Multi-Channel Attention Unit; False = the -aux-mcau ablation."""

    # ---------------------------------------------------------------- loss (learner.py)
    lam: float = 0.01
    """λ: weight of the batch-level PAE loss (Eq. 20); 0 = the -aux ablation. The paper's λ = 2 with
    τ = 0.003 gives the loss a gradient ~700 times TD's here and flattens Q over actions (reward 2.42
    vs 2.77 for -aux, one seed); λ = τ = 0.01 balances the two (λ/τ sets the PAE gradient's scale)."""
    tau: float = 0.01
    """τ: temperature of the soft argmax over Q-values (Eq. 19), on the scale of the Q gaps between
    actions (~0.01-0.1 here). With the straight-through estimator the loss's value is the greedy
    policy's PAE whatever τ is; τ only sets how sharply the gradient concentrates on near-ties."""
    pae_estimator: Literal["soft", "straight_through"] = "straight_through"
    """PAE_b of Eq. 20 from softmax(Q/τ) (the paper) or from the greedy argmax with the softmax's
    gradient (straight-through), so the served greedy policy's PAE is the one held at the target."""
    pae_mode: Literal["q", "offset"] = "q"
    """Where the PAE loss acts: "q" = on Q and the whole network (the paper, Eq. 21); "offset" = on
    one learned scalar β of the served scores Q(s,a) - β·PAE(a) only (TD alone trains Q: the model
    then equals -aux plus a learned Lagrange multiplier). Measured over 3 training seeds (default
    scale, neighbour_similarity 0): q mode 2.867 vs -aux 2.848 reward at matched PAE, and its raw
    greedy PAE misses the 0.40 target by 0.034 on average vs 0.067 for -aux."""
    calibrate_pae: bool = True
    """lam > 0 (either pae_mode; in "q" mode β starts at 0): after training, shift β by bisection so
    that the served greedy policy's ad share on the held-out *logged* screens equals pae_target (the
    loss holds PAE on the training batches; the simulator is never asked, see selection.py)."""
    pae_target: float = 0.4
    """Target PAE of the batch-level constraint (Eq. 21) and of the evaluation's PAE matching."""
    cql_alpha: float = 0.0
    """α of a conservative (CQL(H)) penalty α·(logsumexp_a Q(s,a) - Q(s,a_logged)) added to the TD
    loss (ours, not the paper's): offline DQN without it over-estimates Q on the logged actions by
    ~40 % here (bootstrapping through max_a' over actions the logs rarely show). 0 = off."""
    gamma: float = 0.9
    """Discount factor across screens."""

    # ---------------------------------------------------------------- training (train.py)
    lr: float = 1e-3
    """Adam learning rate of the learner."""
    batch_size: int = 1024
    """Logged transitions per gradient step (RLlib ``train_batch_size_per_learner``)."""
    grad_clip: float = 0.0
    """Clip the gradient norm to this value; 0 disables clipping."""
    iterations: int = 20
    """RLlib ``Algorithm.train()`` calls (one report, with validation, each)."""
    updates_per_iteration: int = 50
    """Gradient steps (minibatches of ``batch_size`` logged transitions) per iteration."""
    target_update_freq: int = 4000
    """Trained transitions between target-network updates (a learner call covers at most this many)."""
    val_fraction: float = 0.2
    """Share of the logged episodes (requests) held out from training (a fixed draw: every trial on a
    dataset gets the same split): they calibrate β and give the selection objective (selection.py)."""
    test_fraction: float = 0.1
    """Share of the logged episodes held out as test logs, drawn from the episodes the validation
    draw left (a fixed draw too): never trained on, never calibrate or choose; training and ``adray
    eval`` report the model's ``test_*`` estimates on them (selection.HeldOut.metrics)."""
    held_out_episodes: int = 50_000
    """At most this many episodes of each held-out split (validation, test) are read for the
    estimates and the β calibration (a random subset of the split: the first ids of its fixed draw),
    so they hold a bounded number of rows whatever the dataset's size (~3.5 screens an episode)."""
    buffer_rows: int = 262_144
    """Rows the learner's shuffle buffer holds at most (``adray.rl.StreamSampler``: blocks of the
    logged Parquet row groups, read in a seeded random order; ~1 KB a row at the default layout)."""
    online: bool = False
    """Train online in the simulator (DQN's own sampling + replay) instead of from the logged Parquet.
    An explicit research option, off by default: it trains by interacting with the simulator, has no
    held-out logs, so neither the β calibration nor the selection objective exists (needs
    ``calibrate_pae: false``)."""

    # ---------------------------------------------------------------- evaluation (evaluate.py)
    eval_requests: int = 1000
    """Fresh simulated requests per evaluation seed."""
    eval_seeds: int = 3
    """Evaluation seeds (mean ± std over them)."""

    # ---------------------------------------------------------------- serving (serving.py)
    serve_epsilon: float = 0.0
    """Serving: share of screens whose slot pattern is drawn uniformly from the 2^K actions
    (exploration, so the next version can learn off-policy from the graph's decision log); the rest
    get the greedy action. Answers carry the propensity: 1-ε+ε/2^K greedy, ε/2^K otherwise."""

    def __post_init__(self) -> None:
        for name in ("log_pae", "pae_target"):
            v = getattr(self, name)
            check(0.0 <= v <= 1.0, f"{name}={v}: expected a value in [0, 1]")
        check(self.lam >= 0, f"lam={self.lam}: expected >= 0")
        check(self.tau > 0, f"tau={self.tau}: expected > 0")
        check(self.cql_alpha >= 0, f"cql_alpha={self.cql_alpha}: expected >= 0")
        check(0.0 < self.gamma <= 1.0, f"gamma={self.gamma}: expected in (0, 1]")
        check(self.lr > 0, f"lr={self.lr}: expected > 0")
        check(self.batch_size >= 1, f"batch_size={self.batch_size}: expected >= 1")
        check(self.grad_clip >= 0, f"grad_clip={self.grad_clip}: expected >= 0")
        check(self.n_requests >= 10, f"n_requests={self.n_requests}: expected >= 10")
        check(0.0 <= self.log_spread <= 0.5, f"log_spread={self.log_spread}: expected in [0, 0.5]")
        check(self.embed_dim >= 2 and self.hidden >= 4, "embed_dim >= 2 and hidden >= 4 expected")
        check(self.iterations >= 1 and self.updates_per_iteration >= 1, "iterations, updates_per_iteration: >= 1")
        check(self.held_out_episodes >= 1, f"held_out_episodes={self.held_out_episodes}: expected >= 1")
        check(self.buffer_rows >= self.batch_size,
              f"buffer_rows={self.buffer_rows}: expected >= batch_size={self.batch_size}")
        check(self.target_update_freq >= 1, f"target_update_freq={self.target_update_freq}: expected >= 1")
        check(self.eval_requests >= 10 and self.eval_seeds >= 1, "eval_requests >= 10, eval_seeds >= 1")
        check(0.0 <= self.serve_epsilon <= 1.0, f"serve_epsilon={self.serve_epsilon}: expected in [0, 1]")
        check(0.0 < self.val_fraction < 1.0, f"val_fraction={self.val_fraction}: expected in (0, 1)")
        check(0.0 < self.test_fraction < 1.0 - self.val_fraction,
              f"test_fraction={self.test_fraction}: expected in (0, 1 - val_fraction={self.val_fraction})")
        check(not (self.online and self.calibrate_pae and self.lam > 0),
              "online=true with calibrate_pae=true: β is calibrated on held-out logged screens and online "
              "training has no logs; set calibrate_pae=false")
        check(self.use_sacu or not self.use_mcau, "use_mcau=true needs use_sacu=true (MCAU reads SACU's C)")

    @property
    def num_actions(self) -> int:
        """2^K slot patterns (follows ``sim.slots``)."""
        return self.sim.num_actions
