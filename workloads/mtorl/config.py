"""MTORL configuration: data protocol, network, loss weights, simulator and Algorithm 1 knobs."""

from __future__ import annotations

import dataclasses
from typing import Literal

from adray.config import Config, check
from adray.workload import EpochConfig


@dataclasses.dataclass(frozen=True)
class SimConfig(Config):
    """The journey simulator (sim.py): drifting users, per-channel costs, journey-dependent gains."""

    num_users: int = 2000
    """Users in the logged dataset (make_data with source: simulator)."""
    steps: int = 30
    """Logged exposures per user."""
    num_channels: int = 4
    """Number of advertising channels m."""
    channel_costs: tuple[float, ...] = (0.6, 1.0, 1.4, 0.8)
    """Cost w_j of one exposure on channel j (length num_channels)."""
    drift: float = 0.08
    """Std of the per-step random walk of tendency and channel preferences."""
    obs_noise: float = 0.5
    """Std of the noise on the observed preference features q_t."""
    log_epsilon: float = 0.3
    """Logging policy: probability of a uniformly random channel (else softmax of observed prefs)."""

    def __post_init__(self) -> None:
        check(self.num_users >= 10, f"sim.num_users={self.num_users}: expected >= 10")
        check(self.steps >= 2, f"sim.steps={self.steps}: expected >= 2")
        check(self.num_channels >= 2, f"sim.num_channels={self.num_channels}: expected >= 2")
        check(
            len(self.channel_costs) == self.num_channels and all(c > 0 for c in self.channel_costs),
            f"sim.channel_costs={self.channel_costs}: expected {self.num_channels} positive numbers",
        )
        check(self.drift >= 0 and self.obs_noise >= 0, "sim.drift / sim.obs_noise: expected >= 0")
        check(0 <= self.log_epsilon <= 1, f"sim.log_epsilon={self.log_epsilon}: expected in [0, 1]")


@dataclasses.dataclass(frozen=True)
class OnlineConfig(Config):
    """Algorithm 1 (online advertising procedure) against the simulator."""

    num_users: int = 500
    """Fresh simulated users taking part in the online procedure."""
    budget: float = 1500.0
    """Total budget W (exploration spend included)."""
    explore_steps: int = 1
    """Exposures per user in the exploration phase (drawn from P_initial)."""
    rounds: int = 40
    """Maximum number of exploitation rounds K."""
    top_n: int = 50
    """Users advertised per round (top-N by predicted reward)."""
    tau: float = 0.5
    """Threshold on the predicted reward for the implicit channel ratio (Sec. 3.7.2)."""
    alpha: float = 0.5
    """Mix of explicit (CTR) and implicit ratio: P_initial = (1-α)P + αP̂ (Eq. 17)."""
    eta: float = 0.5
    """Weight averaging of the user policy with P_initial (Algorithm 1, line 12)."""
    seed: int = 1
    """Seed of the online users and of channel sampling."""

    def __post_init__(self) -> None:
        check(self.num_users >= 1 and self.top_n >= 1, "online.num_users / online.top_n: expected >= 1")
        check(self.budget > 0, f"online.budget={self.budget}: expected > 0")
        check(self.explore_steps >= 1, f"online.explore_steps={self.explore_steps}: expected >= 1")
        check(self.rounds >= 1, f"online.rounds={self.rounds}: expected >= 1")
        for name in ("tau", "alpha", "eta"):
            v = getattr(self, name)
            check(0.0 <= v <= 1.0, f"online.{name}={v}: expected in [0, 1]")


@dataclasses.dataclass(frozen=True)
class MTORLConfig(EpochConfig):
    """MTORL (Liu et al., KDD 2025): data, network (Eq. 3-12), loss (Eq. 13-16), online (Alg. 1)."""

    source: Literal["simulator", "kuairand", "criteo"] = "simulator"
    """What make_data writes: simulator logs, or an import of kuairand_path (criteo: import only)."""
    kuairand_path: str = ""
    """KuaiRand sequence zip/CSV; empty: data/samples/kuairand_sequence.zip in the repository."""
    protocol: Literal["user", "reference"] = "user"
    """user: one window per user, users split 80/10/10. reference: the public notebook's protocol
    (ref_windows windows sampled with replacement from users with >= n+1 steps, windows split)."""
    n: int = 20
    """Window length (time steps per training sequence)."""
    truncate: Literal["last", "first"] = "last"
    """Which n steps of a longer journey the user protocol keeps."""
    min_len: int = 1
    """Users with fewer steps are dropped when importing."""
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    """Train/val/test fractions (of users, or of windows under the reference protocol)."""
    ref_windows: int = 4000
    """Reference protocol: number of windows sampled with replacement."""
    ref_seed: int = 2023
    """Reference protocol: sampling and split seed."""
    step_features: tuple[str, ...] = ("hourmin", "time_ms")
    """KuaiRand per-step columns forming q_t (known before the exposure; outcome columns such as
    play_time_ms / long_view would leak the result of the exposure and are left out by default)."""
    keep_leaky: tuple[str, ...] = ()
    """Feature columns the importer keeps although the leak guard finds that they determine the
    channel or the gain (adray.data.leakguard); by default such columns are dropped at import."""
    gain: Literal["click", "conversion", "both"] = "click"
    """Criteo gain g_t: click, conversion, or both (fused click + 10*conversion; 3 classes)."""
    penalty_s: float = 0.5
    """Penalty strength s in r_t = MinMaxNorm(g_t - s*w_t) (Eq. 3)."""
    reward_type: Literal["binary", "continuous", "multiclass"] = "binary"
    """Reward decoder / loss: sigmoid+BCE, sigmoid+MSE, or softmax+CE over gain classes."""
    variant: Literal["mtorl", "bc", "dt"] = "mtorl"
    """mtorl; bc: same encoder on states only, CE only; dt: Decision Transformer baseline."""
    use_tcn: bool = True
    """Causal TCN state encoder (ablation: w/o CausalState)."""
    use_attention: bool = True
    """Causal attention module (ablation: w/o CausalAttn)."""
    use_addnorm: bool = True
    """Residual + LayerNorm in the Add&Norm blocks (ablation: w/o Add&Norm)."""
    d_model: int = 64
    """Embedding / hidden size d (paper: 512; smaller for CPUs)."""
    tcn_layers: int = 2
    """L1: dilated causal conv layers (dilation 2^l)."""
    kernel_size: int = 3
    """k_c: causal convolution filter size."""
    attn_layers: int = 2
    """L2: Add&Norm blocks after the causal attention (Eq. 8); also DT's transformer depth."""
    heads: int = 2
    """Attention heads."""
    reward_layers: int = 3
    """L3: layers of the reward decoder (Eq. 12)."""
    dropout: float = 0.1
    """Dropout rate."""
    mu: float = 0.08
    """μ: weight of the reward loss (Eq. 16)."""
    lam: float = 1.4
    """λ: weight of the DPO loss (Eq. 16); 0 = ablation w/o DPO."""
    beta: float = 0.1
    """β of the DPO loss (Eq. 15)."""
    policy: Literal["deterministic", "stochastic"] = "stochastic"
    """Online channel choice: argmax (Eq. 10) or sampling (Eq. 11)."""
    online_eval: bool = False
    """``adray eval mtorl`` also runs Algorithm 1 against the simulator (source: simulator only) and
    reports ``test_online_reward`` (clicks per exposure at budget W). Evaluation only: training, the
    best epoch and Tune never see it (they read the offline ``val_*`` metrics)."""
    sim: SimConfig = SimConfig()
    """Journey simulator."""
    online: OnlineConfig = OnlineConfig()
    """Online advertising procedure (Algorithm 1)."""
    ingest: Literal["auto", "memory", "stream"] = "auto"
    """How training reads the data (adray.ingest): ``memory``, ``stream`` (Ray Data per worker; the
    user protocol only) or ``auto``: memory up to ``ingest_memory_max_rows`` training users."""
    ingest_memory_max_rows: int = 1_000_000
    """``auto``: the largest training split (users, from the manifest) trained in memory."""
    ingest_shuffle: bool = True
    """Shuffle every epoch; False: stored order (both paths then give the same model)."""
    ingest_eval_max_rows: int = 0
    """Streaming: users of the validation and test splits evaluated (the first ones in stored order);
    0: every user. Rank 0 evaluates a split batch by batch (``evaluate.eval_outputs``), holding a few
    numbers per valid step, never the split's windows."""
    ingest_readers: int = 0
    """Streaming: concurrent Ray Data read tasks (each a process holding its blocks); 0: one per 4
    Train workers (adray.ingest.readers_for). More read faster and hold more memory."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n >= 2, f"n={self.n}: expected >= 2")
        check(self.min_len >= 1, f"min_len={self.min_len}: expected >= 1")
        check(
            len(self.split_fractions) == 3 and all(f > 0 for f in self.split_fractions) and abs(sum(self.split_fractions) - 1) < 1e-6,
            f"split_fractions={self.split_fractions}: expected 3 positive numbers summing to 1",
        )
        check(self.ref_windows >= 10, f"ref_windows={self.ref_windows}: expected >= 10")
        check(self.d_model >= 4 and self.d_model % self.heads == 0,
              f"d_model={self.d_model}, heads={self.heads}: expected d_model divisible by heads")
        check(self.tcn_layers >= 1 and self.attn_layers >= 1 and self.reward_layers >= 1,
              "tcn_layers / attn_layers / reward_layers: expected >= 1")
        check(self.kernel_size >= 1, f"kernel_size={self.kernel_size}: expected >= 1")
        check(0 <= self.dropout < 1, f"dropout={self.dropout}: expected in [0, 1)")
        check(self.mu >= 0 and self.lam >= 0, f"mu={self.mu}, lam={self.lam}: expected >= 0")
        check(self.beta > 0, f"beta={self.beta}: expected > 0")
        check(self.ingest_memory_max_rows >= 1, "ingest_memory_max_rows: expected >= 1")
        check(self.ingest_eval_max_rows >= 0,
              f"ingest_eval_max_rows={self.ingest_eval_max_rows}: expected >= 0 (0: every user)")
        check(self.ingest_readers >= 0, f"ingest_readers={self.ingest_readers}: expected >= 0 (0: one per 4 workers)")
        check(self.ingest != "stream" or self.protocol == "user",
              "ingest=stream needs protocol=user (the reference protocol samples windows from the whole data)")
        check(self.penalty_s >= 0, f"penalty_s={self.penalty_s}: expected >= 0")
        check(not self.online_eval or self.source == "simulator",
              f"online_eval=true needs source=simulator (Algorithm 1 runs against the simulator), got source={self.source!r}")
        check(not (self.reward_type == "multiclass") or self.gain == "both",
              "reward_type=multiclass needs gain=both (classes: none / click / conversion)")
