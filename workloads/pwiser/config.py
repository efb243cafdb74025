"""PWiseR workload config: model, loss (BCE or BCE + lambda * PWiseR), generator and importer."""

from __future__ import annotations

import dataclasses
from typing import Literal

from adray.config import check
from adray.workload import EpochConfig

MULTI_TASK = ("sharedbottom", "mmoe", "ple")
SINGLE_TASK = ("dnn", "masknet")


@dataclasses.dataclass(frozen=True)
class PWiseRConfig(EpochConfig):
    """Config of the ``pwiser`` workload (Durmus et al., "Pairwise ranking loss for MTL in RecSys")."""

    # ---- model
    model: Literal["sharedbottom", "mmoe", "ple", "dnn", "masknet"] = "ple"
    """Network: multi-task (sharedbottom, mmoe, ple: CTR + CVR towers) or single-task CTR (dnn, masknet)."""
    embedding_dim: int = 16
    """Width of every field's embedding (paper Table 3: 128 on AliExpress-US)."""
    bottom_units: tuple[int, ...] = (128,)
    """SharedBottom: hidden widths of the shared bottom MLP."""
    expert_units: tuple[int, ...] = (128, 64)
    """MMoE / PLE: hidden widths of each expert MLP."""
    num_experts: int = 4
    """MMoE: number of shared experts. PLE: number of shared experts per level."""
    num_specific_experts: int = 2
    """PLE: task-specific experts per task and level."""
    num_levels: int = 1
    """PLE: extraction levels (CGC layers)."""
    tower_units: tuple[int, ...] = (64,)
    """Hidden widths of each task tower (and of the DNN / MaskNet output MLP)."""
    dnn_units: tuple[int, ...] = (256, 128, 64)
    """DNN: hidden widths of the single-task MLP."""
    mask_blocks: int = 2
    """MaskNet: number of parallel MaskBlocks."""
    mask_block_dim: int = 64
    """MaskNet: output width of each MaskBlock."""
    dropout: float = 0.1
    """Dropout after each hidden activation."""
    # ---- loss (train.py)
    loss: Literal["bce", "pwiser"] = "pwiser"
    """``bce``: BCE only. ``pwiser``: BCE + lam * PWiseR on the CTR predictions (Eq. 1)."""
    lam: float = 0.1
    """lambda of Eq. 1, the weight of the PWiseR term (paper optimum 0.1)."""
    m1: float = 0.3
    """Margin between conversion and click-without-conversion samples (Eq. 2, paper 0.3)."""
    m2: float = 0.3
    """Margin between conversion and non-click samples (Eq. 2, paper 0.3)."""
    margin_form: Literal["hinge", "literal"] = "hinge"
    """Indicator of Eq. 2. ``hinge``: pair active when p_cvr < p_other + m (squared hinge, continuous).
    ``literal``: as printed, active only when p_cvr < p_other - m (see train.py)."""
    cvr_weight: float = 1.0
    """Weight of the CTCVR BCE term (multi-task models)."""
    # ---- generator (data.make_data); the seed is EpochConfig.seed
    rows: int = 200_000
    """Impressions to generate (split into train / val / test)."""
    num_users: int = 5_000
    """Distinct users in the generator."""
    num_items: int = 2_000
    """Distinct items (ads) in the generator."""
    latent_dim: int = 8
    """Width of the latent user and item vectors whose dot product is the affinity."""
    ctr: float = 0.04
    """Target click rate, noise clicks included."""
    cvr: float = 0.12
    """Target conversion rate among real (affinity-driven) clicks."""
    noise_click_share: float = 0.3
    """Share of all clicks that are noise (bots, accidental) and independent of affinity."""
    affinity_scale: float = 1.5
    """Strength of affinity in the real-click logit (and, times cvr_affinity, the conversion logit)."""
    cvr_affinity: float = 1.5
    """Affinity weight of the conversion logit relative to the click logit."""
    feature_noise: float = 1.0
    """Std of the noise added to the numeric features that hint at the latent vectors."""
    val_fraction: float = 0.1
    """Share of rows for validation (carved from train when a format has only train + test)."""
    test_fraction: float = 0.1
    """Share of rows for test (generator, and a single imported file)."""
    # ---- import instead of generating
    import_file: str = ""
    """If set, ``make_data`` imports this file / comma-separated files instead of generating."""
    import_format: Literal["aliexpress", "alicpp"] = "aliexpress"
    """Format of ``import_file``."""
    keep_leaky: tuple[str, ...] = ()
    """Feature columns the importer keeps although the leak guard finds that they determine
    click or conversion (adray.data.leakguard); by default such columns are dropped at import."""
    eval_batch_size: int = 8192
    """Rows per forward pass in evaluation."""
    max_steps_per_epoch: int = 0
    """Stop every epoch after this many steps; 0: a full pass (benchmarks, quick looks at big data)."""
    # ---- ingest (adray.ingest)
    ingest: Literal["auto", "memory", "stream"] = "auto"
    """How training reads the data: ``memory`` (splits loaded by the driver), ``stream`` (Ray Data
    from the dataset's files, per worker), ``auto``: memory up to ``ingest_memory_max_rows``."""
    ingest_memory_max_rows: int = 1_000_000
    """``auto``: the largest training split (rows, from the manifest) trained in memory."""
    ingest_shuffle: bool = True
    """Shuffle every epoch (memory: a seeded permutation; stream: seeded file order + local buffer).
    False: stored order every epoch (both paths then give the same batches, hence the same model)."""
    ingest_shuffle_buffer: int = 0
    """Streaming: rows in each worker's local shuffle buffer; 0 = 8 batches."""
    ingest_prefetch_batches: int = 2
    """Streaming: batches each worker prepares ahead (read, converted to tensors) while it trains."""
    ingest_eval_max_rows: int = 0
    """Streaming: rows of the validation and test splits evaluated (the first ones, stored shuffled);
    0: every row (evaluated batch by batch: only the predictions and labels are held)."""
    ingest_readers: int = 0
    """Streaming: concurrent Ray Data read tasks (each a process holding its blocks); 0: one per 4
    Train workers (adray.ingest.readers_for). More read faster and hold more memory."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("embedding_dim", "num_experts", "num_specific_experts", "num_levels",
                     "mask_blocks", "mask_block_dim", "num_users", "num_items", "latent_dim",
                     "eval_batch_size", "ingest_memory_max_rows", "ingest_prefetch_batches"):
            check(getattr(self, name) >= 1, f"{name}={getattr(self, name)}: expected >= 1")
        check(self.ingest_eval_max_rows >= 0, f"ingest_eval_max_rows={self.ingest_eval_max_rows}: expected >= 0 "
              "(0: every row)")
        for name in ("bottom_units", "expert_units", "tower_units", "dnn_units"):
            units = getattr(self, name)
            check(len(units) >= 1 and all(u >= 1 for u in units),
                  f"{name}={list(units)}: expected a non-empty list of positive widths")
        check(0.0 <= self.dropout < 1.0, f"dropout={self.dropout}: expected in [0, 1)")
        check(self.lam >= 0, f"lam={self.lam}: expected >= 0")
        check(0.0 <= self.m1 <= 1.0, f"m1={self.m1}: expected in [0, 1] (probabilities differ by <= 1)")
        check(0.0 <= self.m2 <= 1.0, f"m2={self.m2}: expected in [0, 1] (probabilities differ by <= 1)")
        check(self.max_steps_per_epoch >= 0, f"max_steps_per_epoch={self.max_steps_per_epoch}: expected >= 0")
        check(self.ingest_shuffle_buffer >= 0, f"ingest_shuffle_buffer={self.ingest_shuffle_buffer}: expected >= 0")
        check(self.ingest_readers >= 0, f"ingest_readers={self.ingest_readers}: expected >= 0 (0: one per 4 workers)")
        check(self.cvr_weight >= 0, f"cvr_weight={self.cvr_weight}: expected >= 0")
        check(self.rows >= 100, f"rows={self.rows}: expected >= 100")
        check(0.0 < self.ctr < 1.0, f"ctr={self.ctr}: expected in (0, 1)")
        check(0.0 < self.cvr < 1.0, f"cvr={self.cvr}: expected in (0, 1)")
        check(0.0 <= self.noise_click_share < 1.0,
              f"noise_click_share={self.noise_click_share}: expected in [0, 1)")
        check(self.affinity_scale >= 0, f"affinity_scale={self.affinity_scale}: expected >= 0")
        check(self.cvr_affinity >= 0, f"cvr_affinity={self.cvr_affinity}: expected >= 0")
        check(self.feature_noise >= 0, f"feature_noise={self.feature_noise}: expected >= 0")
        check(0.0 < self.val_fraction < 0.5, f"val_fraction={self.val_fraction}: expected in (0, 0.5)")
        check(0.0 < self.test_fraction < 0.5, f"test_fraction={self.test_fraction}: expected in (0, 0.5)")

    @property
    def multitask(self) -> bool:
        return self.model in MULTI_TASK
