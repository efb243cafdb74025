"""In-process training with the MTORL TorchSpec pieces (the same loop as adray.train's workers on
one worker: Adam, per-epoch seeded permutation, best epoch by val f1_macro, test on best weights).
Used by the benchmarks because 20+ short runs through Ray Train would spend most of their time
starting actors on 2 CPUs; throughput is measured through run_training separately."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workloads.mtorl import WORKLOAD


def fit(cfg: Any, data_dir: Path, arrays: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    spec = WORKLOAD.torch
    assert spec is not None
    arrays = arrays or {s: spec.load_split(data_dir, s, cfg) for s in ("train", "val", "test")}
    torch.manual_seed(cfg.seed)
    model = spec.build_model(cfg, spec.model_meta(data_dir, cfg))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train = arrays["train"]
    n = len(train["action"])
    steps = max(1, n // cfg.batch_size)
    best, best_state, t0 = None, None, time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        perm = np.random.default_rng(cfg.seed * 100_003 + epoch).permutation(n)
        for step in range(steps):
            idx = np.sort(perm[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            batch = {k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in train.items()}
            loss, _ = spec.loss(model, batch, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        val = spec.evaluate(model, arrays["val"], cfg)
        if best is None or val["f1_macro"] > best["f1_macro"]:
            best = val | {"epoch": epoch}
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    test = spec.evaluate(model, arrays["test"], cfg)
    return {"model": model, "val": best, "test": test, "train_s": time.perf_counter() - t0}
