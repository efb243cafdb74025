"""PWiseR (BCE + λ·PWiseR) beats BCE on CTCVR AUC on generated data with noisy clicks (fixed seeds).

Trained with the epoch loop that ships (``adray.train_torch.fit_in_process``, the loop the Ray
Train workers run); the benchmark (benchmarks/pwiser_bce_vs_pwiser.py) reports the full table and
this guards the direction of its headline: a paired comparison on the same data, model and seed,
at the benchmark's scale (200k rows, 3 seeds: PWiseR won 9/9 model x seed pairs there with the
shipped loop, +0.010..+0.011 AUC-CTCVR). At 100k rows, 2 seeds (this test's earlier proxy) the
loop's per-epoch shuffle made seed 1 a loss (0.8588 vs 0.8619): that scale is within seed noise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adray.train_torch import fit_in_process
from workloads.pwiser import WORKLOAD
from workloads.pwiser.config import PWiseRConfig
from workloads.pwiser.data import make_data

pytestmark = pytest.mark.slow


def test_pwiser_improves_ctcvr_auc_over_bce(tmp_path: Path) -> None:
    base = PWiseRConfig(rows=200_000, epochs=2, batch_size=2048, noise_click_share=0.3, ctr=0.06, cvr=0.15,
                        test_fraction=0.3, lam=0.1, m1=0.3, m2=0.3, embedding_dim=8, expert_units=(64,),
                        bottom_units=(64,), tower_units=(32,), model="sharedbottom")
    wins = []
    for seed in (0, 1, 2):
        data = tmp_path / f"s{seed}"
        make_data(base.override({"seed": seed}), data)
        bce = fit_in_process(WORKLOAD.trainer.spec, base.override({"seed": seed, "loss": "bce"}), data)
        pw = fit_in_process(WORKLOAD.trainer.spec, base.override({"seed": seed, "loss": "pwiser"}), data)
        print(f"seed {seed}: auc_ctcvr bce {bce.test['auc_ctcvr']:.4f} pwiser {pw.test['auc_ctcvr']:.4f}")
        wins.append(pw.test["auc_ctcvr"] > bce.test["auc_ctcvr"])
    assert all(wins)
