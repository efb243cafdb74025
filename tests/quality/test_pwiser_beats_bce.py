"""PWiseR (BCE + λ·PWiseR) beats BCE on CTCVR AUC on generated data with noisy clicks (fixed seeds).

The benchmark (benchmarks/pwiser_bce_vs_pwiser.py) reports the full table; this guards the
direction of its headline: a paired comparison on the same data, model and seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from adray.data import read_dataset
from tests.helpers import REPO

pytestmark = pytest.mark.slow


def test_pwiser_improves_ctcvr_auc_over_bce(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from pwiser_bce_vs_pwiser import train_one

    from workloads.pwiser.config import PWiseRConfig
    from workloads.pwiser.data import make_data

    base = PWiseRConfig(rows=100_000, epochs=2, batch_size=2048, noise_click_share=0.3, ctr=0.06, cvr=0.15,
                        test_fraction=0.3, lam=0.1, m1=0.3, m2=0.3, embedding_dim=8, expert_units=(64,),
                        bottom_units=(64,), tower_units=(32,), model="sharedbottom")
    wins = 0
    for seed in (0, 1):
        data = tmp_path / f"s{seed}"
        make_data(base.override({"seed": seed}), data)
        noise = read_dataset(data).read("test", columns=["noise_click"])["noise_click"].to_numpy()
        bce = train_one(base.override({"seed": seed, "loss": "bce"}), data, noise)
        pw = train_one(base.override({"seed": seed, "loss": "pwiser"}), data, noise)
        wins += pw["auc_ctcvr"] > bce["auc_ctcvr"]
    assert wins == 2
