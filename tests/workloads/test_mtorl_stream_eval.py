"""MTORL's evaluation streams over the whole split (issue 21): ``eval_metrics`` of the concatenated
``eval_outputs`` of a split's batches, ``adray eval``'s table read a few users at a time, and the
streamed path's rank-0 evaluation (``EvalSplit``) all give the numbers of the whole-split arrays,
whatever the batch size. No Ray: the batches are read with ``Dataset.iter_batches``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from adray import ingest
from adray.metrics import auc, macro_prf
from workloads.mtorl import TRAINER, sequences
from workloads.mtorl.config import MTORLConfig, SimConfig
from workloads.mtorl.data import iter_split_windows, load_split, make_data, model_meta
from workloads.mtorl.evaluate import eval_metrics, eval_outputs, evaluate, evaluate_methods, outputs
from workloads.mtorl.model import DecisionTransformer, build_model
from workloads.mtorl.online import channel_ratios, run_procedure

CFG = MTORLConfig(n=5, d_model=8, online_eval=True, sim=SimConfig(num_users=90, steps=7)).override(
    {"online.num_users": 30, "online.budget": 40.0, "online.rounds": 4, "online.top_n": 10})
"""Seconds on a CPU: 90 simulated users of 7 steps, windows of 5, a tiny network, Algorithm 1 on 30 users."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Simulator logs stored in row groups of 4 users: every split spans several row groups."""
    out = tmp_path_factory.mktemp("mtorl_eval") / "d"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sequences, "USER_ROW_GROUP_ROWS", 4)
        make_data(CFG, out)
    return out


def net(cfg: MTORLConfig, data: Path, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return build_model(cfg, model_meta(data, cfg)).eval()


def old_evaluate(model: Any, arrays: dict[str, np.ndarray], cfg: Any) -> dict[str, float]:
    """The whole-array ``evaluate`` before issue 21 (the oracle)."""
    probs, r_pred = outputs(model, arrays)
    valid = arrays["mask"] > 0
    y_true, y_pred = arrays["action"][valid], probs.argmax(-1)[valid]
    prf = macro_prf(y_true, y_pred, labels=list(range(probs.shape[-1])))
    out = {"f1_macro": prf["f1"], "precision_macro": prf["precision"], "recall_macro": prf["recall"],
           "accuracy": float(np.mean(y_true == y_pred))}
    if r_pred is not None:
        rv, rt = r_pred[valid], arrays["reward"][valid]
        if cfg.reward_type == "continuous":
            out["reward_mse"] = float(np.mean((rv - rt) ** 2))
        elif cfg.reward_type == "binary":
            out["reward_accuracy"] = float(np.mean((rv > 0.5) == (rt > 0.5)))
            if 0 < rt.mean() < 1:
                out["reward_auc"] = auc((rt > 0.5).astype(int), rv)
        else:
            out["reward_accuracy"] = float(np.mean((rv > 0.5) == (arrays["gain_cls"][valid] > 0)))
    return out


def old_evaluate_methods(cfg: Any, data_dir: Path, model: Any, others: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The whole-array ``evaluate_methods`` before issue 21 (the oracle): both splits held as windows."""
    train, test = load_split(data_dir, "train", cfg), load_split(data_dir, "test", cfg)
    valid = test["mask"] > 0
    y = test["action"][valid]
    labels = list(range(int(max(train["action"].max(), test["action"].max())) + 1))

    def scores(pred: np.ndarray) -> dict[str, float]:
        return {f"test_{k}_macro": v for k, v in macro_prf(y, pred, labels=labels).items()}

    def online(m: Any) -> float:
        _, r_pred = outputs(m, train)
        _, _, p0 = channel_ratios(r_pred, train, cfg.online.tau, cfg.online.alpha, cfg.sim.num_channels)
        lo, hi = (float(v) for v in train["reward_minmax"][0])
        static = train["state"].shape[-1] - (cfg.sim.num_channels + 1)
        return run_procedure(cfg, m.eval(), p0, rank_users=True, channel="model", reward_minmax=(lo, hi),
                             static_dim=static)["avg_reward"]

    majority = np.bincount(train["action"][train["mask"] > 0]).argmax()
    prev = np.concatenate([np.full((len(test["action"]), 1), majority), test["action"][:, :-1]], 1)
    table = {}
    for label, m in {"mtorl": model, **others}.items():
        table[label] = {f"test_{k}": v for k, v in old_evaluate(m, test, cfg).items()}
        if cfg.online_eval and not isinstance(m, DecisionTransformer):
            table[label]["test_online_reward"] = online(m)
    return table | {"majority": scores(np.full(len(y), majority)), "repeat_last": scores(prev[valid])}


def assert_same_table(got: dict[str, dict[str, float]], want: dict[str, dict[str, float]]) -> None:
    assert list(got) == list(want)
    for label in want:
        assert list(got[label]) == list(want[label]), label
        assert got[label] == pytest.approx(want[label], abs=1e-9, rel=0, nan_ok=True), label


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("protocol", ["user", "reference"])
def test_split_windows_in_batches_are_load_split(data: Path, split: str, protocol: str) -> None:
    cfg = CFG.override({"protocol": protocol, "ref_windows": 200})
    whole = load_split(data, split, cfg)
    batches = list(iter_split_windows(str(data), split, cfg, users_per_batch=3))
    if protocol == "user":  # row groups of 4 users, batches of at most 3
        assert len(batches) > 1 and max(len(b["action"]) for b in batches) <= 3
    else:  # windows sampled over every split: the whole split at once
        assert len(batches) == 1
    for k, v in whole.items():
        assert np.array_equal(np.concatenate([b[k] for b in batches]), v), k


@pytest.mark.parametrize("variant,reward_type", [("mtorl", "binary"), ("mtorl", "continuous"),
                                                 ("mtorl", "multiclass"), ("bc", "binary"), ("dt", "binary")])
def test_eval_metrics_of_batch_outputs_are_the_whole_array_metrics(data: Path, variant: str, reward_type: str) -> None:
    cfg = CFG.override({"variant": variant, "reward_type": reward_type, "gain": "both" if reward_type == "multiclass" else "click"})
    model = net(cfg, data)
    val = load_split(data, "val", cfg)
    want = old_evaluate(model, val, cfg)
    assert evaluate(model, val, cfg) == want
    parts = [eval_outputs(model, {k: v[i:i + 2] for k, v in val.items()}, cfg) for i in range(0, len(val["action"]), 2)]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    assert eval_metrics(merged, cfg) == pytest.approx(want, abs=1e-9, rel=0, nan_ok=True)
    assert ("reward_pred" in merged) == (variant != "dt")


def test_streamed_rank0_evaluation_covers_the_whole_split(data: Path) -> None:
    """The streaming path's rank 0 with ``ingest_eval_max_rows: 0``: ``EvalSplit`` over every row
    group of the split through mtorl's ``stream_convert`` and ``eval_outputs``: the metrics of
    ``load_split``'s whole arrays (several row groups here; before, arrays of the first 500,000 users)."""
    spec, cfg = TRAINER.spec, CFG
    assert spec.evaluates_batches
    meta = model_meta(data, cfg)
    model = net(cfg, data)
    for split in ("val", "test"):
        convert = spec.converter(cfg, meta, f"{data} split {split!r}")
        stream = ingest.EvalSplit(str(data), split, spec.columns(meta, cfg), convert, max_rows=0)
        assert len(list(stream.batches())) > 1
        got = ingest.evaluate(spec, model, stream, cfg)
        assert got == pytest.approx(old_evaluate(model, load_split(data, split, cfg), cfg), abs=1e-9, rel=0)


@pytest.mark.parametrize("protocol", ["user", "reference"])
def test_streamed_evaluate_methods_is_the_whole_array_table(data: Path, protocol: str) -> None:
    cfg = CFG.override({"protocol": protocol, "ref_windows": 200})
    model = net(cfg, data).train()  # evaluate_methods switches dropout off itself
    others = {"bc": net(cfg.override({"variant": "bc"}), data, 1),
              "dt": net(cfg.override({"variant": "dt"}), data, 2)}
    want = old_evaluate_methods(cfg, data, net(cfg, data), others)
    assert "test_online_reward" in want["mtorl"] and "test_online_reward" not in want["dt"]
    got = evaluate_methods(cfg, str(data), model, others, users_per_batch=7)
    assert model.training
    assert_same_table(got, want)


def test_batch_size_does_not_change_the_table(data: Path) -> None:
    cfg = CFG.override({"online_eval": False})
    model = net(cfg, data)
    tables = [evaluate_methods(cfg, data, model, users_per_batch=k) for k in (1, 7, 10**6)]
    assert "test_online_reward" not in tables[0]["mtorl"]
    for t in tables[1:]:
        assert_same_table(t, tables[0])
