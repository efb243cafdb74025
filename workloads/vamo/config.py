"""Typed config of the VAMO workload: the auction simulator (nested, ``sim``), the logging bidders,
the generative bidding network, the multi-task weighting, training and evaluation."""

from __future__ import annotations

import dataclasses
from typing import Literal

from adray.config import Config, check
from adray.workload import EpochConfig

TASKS = ("gmv", "dir_gmv", "cart")
"""The three bidding tasks of the paper: store-conversion GMV, direct-conversion GMV, add-to-cart count."""
STATE_DIM = 16
"""Width of the AuctionNet state (trajectory.STATE_FEATURES)."""

Weighting = Literal["stl", "vanilla", "dwa", "famo", "pcgrad", "fairgrad", "vamo", "vamo_train"]
Temporal = Literal["timesnet", "lstm", "none"]


@dataclasses.dataclass(frozen=True)
class SimConfig(Config):
    """The AuctionNet-style auction simulator (sim.py, world.py).

    Scales (budgets, CPA constraints, pValues, bids) follow the public AuctionNet data: pValue about
    0.005, bids 0.1-0.6, budgets of thousands and CPA constraints of tens for 500,000 impressions a
    day. Nested under ``VamoConfig.sim`` (``--set sim.steps=96``) and stored in the manifest.
    """

    steps: int = 48
    """T: decision steps per day (AuctionNet 48; the paper 96, 15 minutes each)."""
    impressions: int = 500_000
    """Impressions in a day of average traffic (the day's traffic level shifts it, see shift_traffic)."""
    n_categories: int = 6
    """Advertiser categories (AuctionNet: 6 x 8); advertiser i is in category i mod n_categories."""
    task_advertisers: tuple[int, int, int] = (20, 20, 10)
    """Advertisers running each task (gmv, dir_gmv, cart): the paper's 20/20/10. Their sum is the
    number of advertisers in the market (the 48-advertiser benchmark uses 20/20/8)."""
    exposure: tuple[float, ...] = (1.0, 0.8, 0.6)
    """GSP slots and the probability that each is seen; a slot is seen only if the one above is
    (one uniform u per impression: slot k is exposed iff u < exposure[k]; nonincreasing)."""
    reserve_price: float = 0.01
    """A slot is sold only if the next bid down (its price) is at least this."""
    min_remaining_budget: float = 0.1
    """An advertiser whose remaining budget is below this stops bidding (AuctionNet's isEnd)."""
    budget_range: tuple[float, float] = (2000.0, 8000.0)
    """Daily budgets are uniform in this range for a day of ``impressions``=500,000; scaled linearly."""
    task_cpa: tuple[float, float, float] = (30.0, 36.0, 6.0)
    """Centre of each task's CPA constraint (cost per conversion event: purchase, direct purchase, cart)."""
    cpa_spread: float = 0.3
    """CPA constraints are uniform in centre x [1 - spread, 1 + spread]."""
    task_pvalue: tuple[float, float, float] = (0.006, 0.005, 0.03)
    """Median pValue (probability of the task's conversion event when exposed) of each task."""
    task_order_value: tuple[float, float, float] = (60.0, 40.0, 1.0)
    """Mean value of one conversion event: store GMV, direct GMV, 1 = a cart is counted."""
    order_value_sd: float = 0.5
    """Log-normal sd of the GMV of one conversion (tasks whose order value is not 1)."""
    pvalue_sd_pair: float = 0.5
    """Log-normal sd of the advertiser x impression part of pValue."""
    pvalue_sd_category: float = 0.4
    """Log-normal sd of the impression x category part (advertisers of a category want the same users)."""
    pvalue_sd_impression: float = 0.25
    """Log-normal sd of the impression part shared by every advertiser."""
    pvalue_sd_advertiser: float = 0.2
    """Log-normal sd of each advertiser's fixed pValue level."""
    sigma_ratio: float = 0.15
    """pValueSigma = sigma_ratio x pValue: the realised value is pValue + sigma x N(0, 1) truncated."""
    sigma_trunc: float = 2.0
    """The value noise is truncated at +- this many sigmas, then the value is clipped to [0, 1]."""
    traffic_amplitude: float = 0.6
    """Diurnal traffic: relative amplitude of the daily cycle of impressions per step."""
    value_amplitude: float = 0.3
    """Diurnal value: log amplitude of the daily cycle of pValue (its peak hour differs by task)."""
    shift_traffic: float = 0.15
    """Distribution shift: log sd of a day's traffic level (impressions of the day)."""
    shift_value: float = 0.15
    """Distribution shift: per-day log step of each task's value level (a random walk over days)."""
    shift_category: float = 0.2
    """Distribution shift: per-day log step of each category's value level (competitor mix)."""
    regime_day: int = 0
    """Task-specific abrupt shift (the paper's Sec. 1 and Fig. 1b: shifts that are "abrupt" and "not
    uniform across tasks"): from this day on, each task's value level moves by ``regime_value`` and
    its daily value peak by ``regime_peak_hours``, and stays there. 0: no such shift. Placed among the
    last training days, it makes the validation and evaluation days alike and most training days
    unlike them, which is the setting validation alignment is for."""
    regime_value: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Log pValue offset of each task (gmv, dir_gmv, cart) from ``regime_day`` on."""
    regime_peak_hours: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Hours added to each task's value peak hour from ``regime_day`` on."""
    chunk_rows: int = 16384
    """Impressions processed at once (memory: about 40 bytes x chunk_rows x advertisers)."""

    KEY_OPTIONAL = ("regime_day", "regime_value", "regime_peak_hours")  # added after datasets were made

    def __post_init__(self) -> None:
        check(self.steps >= 2, f"sim.steps={self.steps}: expected >= 2")
        check(self.impressions >= self.steps, f"sim.impressions={self.impressions}: expected >= steps")
        check(self.n_categories >= 1, f"sim.n_categories={self.n_categories}: expected >= 1")
        check(min(self.task_advertisers) >= 1, f"sim.task_advertisers={self.task_advertisers}: each >= 1")
        check(sum(self.task_advertisers) >= len(self.exposure) + 1,
              f"sim.task_advertisers={self.task_advertisers}: need more advertisers than slots")
        check(len(self.exposure) >= 1 and all(0 < p <= 1 for p in self.exposure),
              f"sim.exposure={self.exposure}: expected probabilities in (0, 1]")
        check(all(a >= b for a, b in zip(self.exposure, self.exposure[1:])),
              f"sim.exposure={self.exposure}: expected nonincreasing (a slot is seen only if the one above is)")
        check(self.reserve_price >= 0, f"sim.reserve_price={self.reserve_price}: expected >= 0")
        check(0 < self.budget_range[0] <= self.budget_range[1], f"sim.budget_range={self.budget_range}")
        check(min(self.task_cpa) > 0, f"sim.task_cpa={self.task_cpa}: expected > 0")
        check(0 <= self.cpa_spread < 1, f"sim.cpa_spread={self.cpa_spread}: expected in [0, 1)")
        check(all(0 < p < 1 for p in self.task_pvalue), f"sim.task_pvalue={self.task_pvalue}: in (0, 1)")
        check(min(self.task_order_value) > 0, f"sim.task_order_value={self.task_order_value}: > 0")
        check(self.sigma_ratio >= 0 and self.sigma_trunc > 0, "sim.sigma_ratio >= 0 and sim.sigma_trunc > 0")
        check(0 <= self.traffic_amplitude < 1, f"sim.traffic_amplitude={self.traffic_amplitude}: in [0, 1)")
        for name in ("order_value_sd", "pvalue_sd_pair", "pvalue_sd_category", "pvalue_sd_impression",
                     "pvalue_sd_advertiser", "value_amplitude", "shift_traffic", "shift_value",
                     "shift_category"):
            check(getattr(self, name) >= 0, f"sim.{name}={getattr(self, name)}: expected >= 0")
        check(self.regime_day >= 0, f"sim.regime_day={self.regime_day}: expected >= 0 (0: no regime shift)")
        for name in ("regime_value", "regime_peak_hours"):
            check(len(getattr(self, name)) == len(self.task_advertisers),
                  f"sim.{name}={getattr(self, name)}: expected one value per task {TASKS}")
        check(self.chunk_rows >= 64, f"sim.chunk_rows={self.chunk_rows}: expected >= 64")

    @property
    def n_advertisers(self) -> int:
        return sum(self.task_advertisers)


@dataclasses.dataclass(frozen=True)
class VamoConfig(EpochConfig):
    """Config of the ``vamo`` workload (VAMO: validation-aligned multi-task generative auto-bidding)."""

    KEY_OPTIONAL = ("gain_avg",)  # added after runs and sweeps were named

    sim: SimConfig = SimConfig()
    """The auction simulator."""
    # ---- data (data.make_data): the seed is TrainConfig.seed
    train_days: int = 8
    """Simulated days of training logs (the paper: 8); then one validation and one test day."""
    explore: float = 0.3
    """Logging bidders: log sd of the per-step noise on alpha and of each advertiser-day's alpha scale."""
    # ---- model (model.py)
    context: int = 16
    """Decision steps the transformer sees (the current one and those before it)."""
    hidden: int = 64
    """Width h of the state embeddings and the transformer."""
    layers: int = 2
    """Transformer encoder layers (shared backbone)."""
    heads: int = 4
    """Attention heads."""
    dropout: float = 0.0
    """Dropout in the transformer (0 keeps 1-worker and 2-worker steps bit-comparable)."""
    temporal: Temporal = "timesnet"
    """Temporal module added to the state embeddings (Eq. 10): TimesNet, an LSTM (ablation) or none."""
    history: int = 16
    """H: length of the state history x_{-H:-1} the temporal module reads (Eq. 12)."""
    top_k: int = 2
    """TimesNet: number of dominant periods (Eq. 12-13)."""
    inception_kernels: int = 3
    """TimesNet: Inception block kernels 1, 3, ..., 2n-1."""
    head_hidden: int = 64
    """Hidden width of each task head f_theta_k."""
    rtg_scale: float = 0.0
    """Return-to-go y(tau) is divided by this; 0 = the mean daily score of the training data (with
    ``rtg_norm: capacity``, the mean score per unit of capacity)."""
    rtg_norm: Literal["none", "capacity"] = "none"
    """What the return-to-go is counted in: conversions (none), or conversions per unit of the
    advertiser's capacity, budget / CPA constraint (the conversions its budget buys at the
    constraint): then a target means "as efficient as", whatever the advertiser's size, and the
    policy needs the advertiser's budget."""
    # ---- multi-task weighting (weighting.py)
    weighting: Weighting = "vamo"
    """How task gradients are combined: stl (one model per task), vanilla (equal), dwa, famo, pcgrad,
    fairgrad, vamo (Algorithm 1), vamo_train (ablation: the total training gradient as target)."""
    lam: float = 1.0
    """VAMO temperature lambda of softmax(m / lambda) (Eq. 9; the paper uses 1)."""
    normalize_gains: bool = True
    """Divide the marginal gains m_k by max_k |m_k| before the softmax (a difference from the paper:
    raw inner products of gradients scale with the loss, so lambda would not carry across models)."""
    gain_avg: float = 0.0
    """Issue 22, off at 0 (the paper's Algorithm 1: each step's weights from that step's gains): the
    weights come from an exponential moving average of the (normalised) gains over steps, with this
    decay beta (bias-corrected as Adam's moments; a task's average moves only on steps it is in).
    One training batch against one validation batch moves the weights by about +- 0.15 around 1/K,
    more than the consistent part of the gains; 0.99 averages about 100 steps."""
    dwa_temperature: float = 2.0
    """DWA temperature T."""
    famo_lr: float = 0.025
    """FAMO: learning rate of the task logits."""
    famo_gamma: float = 0.01
    """FAMO: weight decay of the task logits."""
    fairgrad_alpha: float = 1.0
    """FairGrad: alpha of alpha-fairness (1 = proportional fairness)."""
    # ---- evaluation (evaluate.py)
    eval_days: int = 2
    """Fresh simulated days each method bids in (same days and opponents for every method)."""
    eval_seeds: int = 3
    """Opponent seeds per evaluation day: each draws which baseline every opponent bids with
    (evaluate.py); metrics are the mean over days x seeds, ``<metric>_std`` the std over seeds."""
    target_return: float = 1.5
    """At inference the return-to-go starts at this multiple of the advertiser's best logged return."""
    task_targets: tuple[float, ...] = ()
    """Per task (``TASKS`` order), the multiple that replaces ``target_return`` for that task's
    advertisers; empty: ``target_return`` for all. ``evaluate.choose_target`` sets it from the
    validation day (issue 22: one target for all tasks, chosen on the total score, let a task's
    advertisers stop bidding: gmv 0 on one seed while the score rose)."""
    target_grid: tuple[float, ...] = ()
    """Issue 22, off when empty: training ends by bidding the held-out validation day
    (``evaluate.validation_day``, the day of the ``val`` split; never an evaluation day) at each
    ``target_return`` multiple of this grid, and each task's best multiple by its own metric is
    published with the model (its meta's ``targets_chosen``, which ``load_model`` reads as
    ``task_targets``); the run reports ``val_day_score`` and ``val_day_<task>`` at those targets,
    which a sweep may optimise (``tune_spaces/vamo-valday.yaml``). The one place training calls the
    auction simulator, and only when asked: the paper validates on a held-out day."""
    max_steps_per_epoch: int = 0
    """Stop every epoch after this many steps; 0: a full pass (benchmarks, quick looks at big data)."""
    # ---- ingest (adray.ingest, stream.py)
    ingest: Literal["auto", "memory", "stream"] = "auto"
    """How training reads the data: ``memory`` (the driver loads every window: about 2.4 KB a training
    step at context 16 + history 16), ``stream`` (Ray Data reads whole trajectories and makes their
    windows in its read tasks; each worker gets its share of the windows), ``auto``: memory up to
    ``ingest_memory_max_rows``."""
    ingest_memory_max_rows: int = 250_000
    """``auto``: the largest training split (step rows, from the manifest) trained in memory."""
    ingest_shuffle: bool = True
    """Shuffle every epoch (memory: a permutation of the windows; stream: row groups and each one's
    windows in seeded orders, then a local buffer). False: stored order every epoch (one worker then
    trains the same model on both paths)."""
    ingest_shuffle_buffer: int = 0
    """Streaming: windows in each worker's local shuffle buffer; 0 = 8 batches."""
    ingest_prefetch_batches: int = 2
    """Streaming: batches each worker prepares ahead."""
    ingest_eval_max_rows: int = 100_000
    """Streaming: validation / test are the windows of the first whole trajectories within this many
    step rows (one day each; 0: all)."""
    ingest_readers: int = 0
    """Streaming: concurrent Ray Data read tasks (each a process holding its blocks); 0: one per 4
    Train workers (adray.ingest.readers_for). More read faster and hold more memory."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.train_days >= 1, f"train_days={self.train_days}: expected >= 1")
        check(self.explore >= 0, f"explore={self.explore}: expected >= 0")
        check(self.context >= 1, f"context={self.context}: expected >= 1")
        check(self.hidden >= 1 and self.hidden % self.heads == 0,
              f"hidden={self.hidden}: expected a positive multiple of heads={self.heads}")
        check(self.layers >= 1, f"layers={self.layers}: expected >= 1")
        check(0 <= self.dropout < 1, f"dropout={self.dropout}: expected in [0, 1)")
        check(self.history >= 2, f"history={self.history}: expected >= 2")
        check(1 <= self.top_k <= self.history // 2, f"top_k={self.top_k}: expected in [1, history/2]")
        check(self.inception_kernels >= 1, f"inception_kernels={self.inception_kernels}: expected >= 1")
        check(self.head_hidden >= 1, f"head_hidden={self.head_hidden}: expected >= 1")
        check(self.rtg_scale >= 0, f"rtg_scale={self.rtg_scale}: expected >= 0")
        check(self.lam > 0, f"lam={self.lam}: expected > 0 (near 0 is greedy, large is Vanilla)")
        check(0 <= self.gain_avg < 1, f"gain_avg={self.gain_avg}: expected in [0, 1) (0: each step's own gains)")
        check(self.dwa_temperature > 0, f"dwa_temperature={self.dwa_temperature}: expected > 0")
        check(self.famo_lr > 0 and self.famo_gamma >= 0, "famo_lr > 0 and famo_gamma >= 0")
        check(self.fairgrad_alpha > 0, f"fairgrad_alpha={self.fairgrad_alpha}: expected > 0")
        check(self.eval_days >= 1 and self.eval_seeds >= 1, "eval_days and eval_seeds: expected >= 1")
        check(self.target_return > 0, f"target_return={self.target_return}: expected > 0")
        check(not self.task_targets or (len(self.task_targets) == len(TASKS) and min(self.task_targets) > 0),
              f"task_targets={list(self.task_targets)}: expected none or {len(TASKS)} numbers > 0 (one per task "
              f"of {list(TASKS)})")
        check(all(t > 0 for t in self.target_grid),
              f"target_grid={list(self.target_grid)}: expected numbers > 0 (return-target multiples), or none")
        check(not (self.target_grid and self.task_targets),
              f"target_grid={list(self.target_grid)} and task_targets={list(self.task_targets)}: give one; "
              "target_grid chooses the task targets on the validation day")
        check(self.max_steps_per_epoch >= 0, f"max_steps_per_epoch={self.max_steps_per_epoch}: expected >= 0")
        check(self.ingest_memory_max_rows >= 1 and self.ingest_prefetch_batches >= 1,
              "ingest_memory_max_rows / ingest_prefetch_batches: expected >= 1")
        check(self.ingest_shuffle_buffer >= 0 and self.ingest_eval_max_rows >= 0,
              "ingest_shuffle_buffer / ingest_eval_max_rows: expected >= 0")
        check(self.ingest_readers >= 0, f"ingest_readers={self.ingest_readers}: expected >= 0 (0: one per 4 workers)")
