"""``adray demo``: the main job end to end on an embedded local Ray.

Generates PWiseR data, trains a PLE model with PWiseR loss on 2 Ray Train workers, trains the BCE
baseline the same way, runs a short Optuna + ASHA sweep over λ, m1, m2, and prints the results.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from adray.config import load_config
from adray.runtime import ensure_ray
from adray.train import run_training
from adray.tune import load_space, run_sweep
from adray.workload import get_workload

DEMO_CONFIG = "demo"


def run_demo(workers: int = 2, trials: int = 6, address: str | None = None) -> None:
    console = Console()
    t0 = time.perf_counter()
    ensure_ray(address)
    wl = get_workload("pwiser")
    cfg = load_config(wl.config_cls, DEMO_CONFIG, wl.configs_dir)
    console.rule(f"1/3  PWiseR ({cfg.model}) on generated CTR/CVR data, {workers} Ray Train workers")
    pw = run_training(wl, cfg, num_workers=workers, progress=True)
    console.rule("2/3  the BCE baseline, same model, data and epochs")
    bce = run_training(wl, cfg.override({"loss": "bce"}), num_workers=workers, progress=True, model_name="pwiser-bce")
    console.rule(f"3/3  Optuna (TPE) + ASHA sweep over λ, m1, m2: {trials} trials")
    space = load_space(Path("tune_spaces/pwiser.yaml"), "pwiser")
    sweep = run_sweep(space, trials=trials, config=DEMO_CONFIG, progress=True)

    table = Table(title="adray demo: PWiseR vs BCE (test split of generated data)")
    for col in ("run", "model", "test AUC CTR", "test AUC CTCVR", "samples/s"):
        table.add_column(col, justify="right" if col != "run" else "left")
    for label, out in (("BCE", bce), ("BCE + λ·PWiseR", pw)):
        m = out.metrics
        table.add_row(label, out.model_ref or "", f"{m.get('test_auc_ctr', float('nan')):.4f}",
                      f"{m.get('test_auc_ctcvr', float('nan')):.4f}", f"{m.get('samples_per_s', 0):,.0f}")
    console.print(table)
    console.print(f"sweep best {sweep.best_params} -> {sweep.best_metrics}  published {sweep.model_ref}")
    console.print(f"sweep table {sweep.table_path}\nsweep plot  {sweep.plot_path}")
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s")
