"""The paper's metrics: AUC of CTR (vs click) and of CTCVR (pCTR * pCVR vs click AND conversion).

Single-task models (DNN, MaskNet) have no CVR head: their ``auc_ctcvr`` scores pCTR against
click AND conversion, i.e. how well the CTR ranking alone orders conversions (what PWiseR pushes
a CTR model to do). Undefined AUCs (a split with one class) are NaN with a MetricWarning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adray.data import read_dataset
from adray.metrics import auc

from .config import PWiseRConfig
from .data import model_meta
from .train import stream_columns, stream_convert

LOGREG_ROWS = 200_000
"""Training rows (a seeded sample) the logistic-regression baseline is fitted on."""


@torch.no_grad()
def predict(model: Any, arrays: dict[str, np.ndarray], batch_size: int = 8192) -> dict[str, np.ndarray]:
    """Model probabilities over a split, in batches: ``{"ctr": (N,), ...}`` as numpy."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, list[np.ndarray]] = {}
    for s in range(0, len(arrays["x_cat"]), batch_size):
        x_cat = torch.from_numpy(arrays["x_cat"][s:s + batch_size]).to(device)
        x_num = torch.from_numpy(arrays["x_num"][s:s + batch_size]).to(device)
        for k, v in model(x_cat, x_num).items():
            out.setdefault(k, []).append(v.float().cpu().numpy())
    model.train(was_training)
    return {k: np.concatenate(v) for k, v in out.items()}


def eval_outputs(model: Any, arrays: dict[str, np.ndarray], cfg: PWiseRConfig) -> dict[str, np.ndarray]:
    """TorchSpec.eval_outputs: per row, the labels and the predicted pCTR and pCTCVR (pCTR for
    single-task models)."""
    p = predict(model, arrays, cfg.eval_batch_size)
    return {"click": arrays["click"], "ctcvr": arrays["click"] * arrays["conversion"],
            "p_ctr": p["ctr"], "p_ctcvr": p.get("ctcvr", p["ctr"])}


def eval_metrics(out: dict[str, np.ndarray], cfg: PWiseRConfig) -> dict[str, float]:
    """TorchSpec.eval_metrics: ``{"auc_ctr", "auc_ctcvr"}`` of a split's :func:`eval_outputs`."""
    return {"auc_ctr": auc(out["click"], out["p_ctr"], name="auc_ctr"),
            "auc_ctcvr": auc(out["ctcvr"], out["p_ctcvr"], name="auc_ctcvr")}


def evaluate(model: Any, arrays: dict[str, np.ndarray], cfg: PWiseRConfig) -> dict[str, float]:
    """TorchSpec.evaluate: ``{"auc_ctr", "auc_ctcvr"}`` on one split."""
    return eval_metrics(eval_outputs(model, arrays, cfg), cfg)


def split_batches(data_dir: Path | str, split: str, cfg: PWiseRConfig, max_rows: int = 0,
                  ) -> Iterator[dict[str, np.ndarray]]:
    """``split`` row group by row group as :func:`data.load_split`'s arrays (the first ``max_rows``
    rows; 0: all): what evaluation reads, bounded whatever the split's size."""
    from adray.ingest import eval_batches

    meta = model_meta(data_dir, cfg)
    where = f"{read_dataset(data_dir).display} split {split!r}"
    return eval_batches(data_dir, split, stream_columns(meta, cfg),
                        lambda b: stream_convert(b, cfg, meta, where), max_rows)


def sample_rows(batches: Iterable[dict[str, np.ndarray]], n: int, seed: int) -> dict[str, np.ndarray]:
    """A seeded uniform sample of ``n`` rows of a stream, held ``n`` rows at a time: each row gets a
    seeded random key and the ``n`` smallest keys are kept. A stream of at most ``n`` rows: all of them,
    in the order of ``np.random.default_rng(seed).permutation``."""
    rng = np.random.default_rng(seed)
    kept: dict[str, np.ndarray] = {}
    keys = np.zeros(0)
    for batch in batches:
        keys = np.concatenate([keys, rng.random(len(next(iter(batch.values()))))])
        kept = {k: np.concatenate([kept[k], v]) if kept else v for k, v in batch.items()}
        if len(keys) > 2 * n:
            top = np.argpartition(keys, n)[:n]
            keys, kept = keys[top], {k: v[top] for k, v in kept.items()}
    if len(keys) <= n:
        order = np.random.default_rng(seed).permutation(len(keys))
    else:
        order = np.argpartition(keys, n)[:n]
        order = order[np.argsort(keys[order])]
    return {k: v[order] for k, v in kept.items()}


def _one_hot_logreg(train: dict[str, np.ndarray]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Baseline: logistic regression on one-hot ids + numeric features (one model per label), fitted
    on ``train`` (a sample of the train split); returns the scorer of a batch (``p_ctr``, ``p_ctcvr``:
    0 where a label has one class in the sample)."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    enc = OneHotEncoder(handle_unknown="ignore").fit(train["x_cat"])
    scaler = StandardScaler().fit(train["x_num"])

    def design(a: dict[str, np.ndarray]) -> Any:
        return sparse.hstack([enc.transform(a["x_cat"]), sparse.csr_matrix(scaler.transform(a["x_num"]))]).tocsr()

    x_train = design(train)
    labels = {"p_ctr": train["click"], "p_ctcvr": train["click"] * train["conversion"]}
    fitted = {name: LogisticRegression(C=0.1, max_iter=300).fit(x_train, y) for name, y in labels.items()
              if len(np.unique(y)) >= 2}

    def score(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = design(batch) if fitted else None
        return {name: fitted[name].predict_proba(x)[:, 1] if name in fitted else np.zeros(len(batch["click"]))
                for name in labels}

    return score


def _aucs(out: dict[str, np.ndarray], p_ctr: np.ndarray, p_ctcvr: np.ndarray, who: str) -> dict[str, float]:
    return {"test_auc_ctr": auc(out["click"], p_ctr, name=f"{who} auc_ctr"),
            "test_auc_ctcvr": auc(out["ctcvr"], p_ctcvr, name=f"{who} auc_ctcvr")}


def evaluate_methods(cfg: PWiseRConfig, data_dir: Path, model: Any,
                     others: Mapping[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """Test-split table: the given model under ``"pwiser"``, each model of ``others`` under its label
    (e.g. a BCE-trained twin), a logistic-regression baseline trained on a seeded sample of at most
    ``LOGREG_ROWS`` training rows, and a constant predictor (AUC 0.5: the contract suite's trivial
    baseline). Streamed: the test split is read once, row group by row group, every method scoring
    each batch; only the predictions and labels are held, whatever the split's size."""
    models = {"pwiser": model, **(others or {})}
    logreg = _one_hot_logreg(sample_rows(split_batches(data_dir, "train", cfg), LOGREG_ROWS, cfg.seed))
    parts: dict[str, list[dict[str, np.ndarray]]] = {label: [] for label in (*models, "logistic_regression")}
    for batch in split_batches(data_dir, "test", cfg):
        for label, m in models.items():
            parts[label].append(eval_outputs(m, batch, cfg))
        parts["logistic_regression"].append(logreg(batch))
    out = {label: {k: np.concatenate([o[k] for o in chunks]) for k in chunks[0]} for label, chunks in parts.items()}
    table = {label: _prefixed(eval_metrics(out[label], cfg)) for label in models}
    labels, lr = out["pwiser"], out["logistic_regression"]
    table["logistic_regression"] = _aucs(labels, lr["p_ctr"], lr["p_ctcvr"], "logreg")
    zeros = np.zeros(len(labels["click"]))
    table["constant"] = _aucs(labels, zeros, zeros, "constant")
    return table


def _prefixed(metrics: dict[str, float]) -> dict[str, float]:
    return {f"test_{k}": v for k, v in metrics.items()}
