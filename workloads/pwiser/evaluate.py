"""The paper's metrics: AUC of CTR (vs click) and of CTCVR (pCTR * pCVR vs click AND conversion).

Single-task models (DNN, MaskNet) have no CVR head: their ``auc_ctcvr`` scores pCTR against
click AND conversion, i.e. how well the CTR ranking alone orders conversions (what PWiseR pushes
a CTR model to do). Undefined AUCs (a split with one class) are NaN with a MetricWarning.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adray.metrics import auc

from .config import PWiseRConfig
from .data import load_split


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


def evaluate(model: Any, arrays: dict[str, np.ndarray], cfg: PWiseRConfig) -> dict[str, float]:
    """TorchSpec.evaluate: ``{"auc_ctr", "auc_ctcvr"}`` on one split."""
    p = predict(model, arrays, cfg.eval_batch_size)
    y_ctcvr = arrays["click"] * arrays["conversion"]
    return {
        "auc_ctr": auc(arrays["click"], p["ctr"], name="auc_ctr"),
        "auc_ctcvr": auc(y_ctcvr, p.get("ctcvr", p["ctr"]), name="auc_ctcvr"),
    }


def _one_hot_logreg(train: dict[str, np.ndarray], test: dict[str, np.ndarray], max_rows: int = 200_000,
                    seed: int = 0) -> dict[str, float]:
    """Baseline: logistic regression on one-hot ids + numeric features (one model per label)."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rows = np.random.default_rng(seed).permutation(len(train["x_cat"]))[:max_rows]
    enc = OneHotEncoder(handle_unknown="ignore").fit(train["x_cat"][rows])
    scaler = StandardScaler().fit(train["x_num"][rows])

    def design(a: dict[str, np.ndarray], idx: np.ndarray | slice) -> Any:
        return sparse.hstack([enc.transform(a["x_cat"][idx]), sparse.csr_matrix(scaler.transform(a["x_num"][idx]))]).tocsr()

    x_train, x_test = design(train, rows), design(test, slice(None))
    out = {}
    for name, y_tr, y_te in (
        ("auc_ctr", train["click"][rows], test["click"]),
        ("auc_ctcvr", (train["click"] * train["conversion"])[rows], test["click"] * test["conversion"]),
    ):
        if len(np.unique(y_tr)) < 2:
            out[name] = auc(y_te, np.zeros(len(y_te)), name=f"logreg {name}")
            continue
        clf = LogisticRegression(C=0.1, max_iter=300).fit(x_train, y_tr)
        out[name] = auc(y_te, clf.predict_proba(x_test)[:, 1], name=f"logreg {name}")
    return out


def evaluate_methods(cfg: PWiseRConfig, data_dir: Path, model: Any,
                     others: Mapping[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """Test-split table: the given model under ``"pwiser"``, each model of ``others`` under its label
    (e.g. a BCE-trained twin), a logistic-regression baseline trained on the train split, and a
    constant predictor (AUC 0.5: the contract suite's trivial baseline)."""
    test = load_split(Path(data_dir), "test", cfg)
    train = load_split(Path(data_dir), "train", cfg)
    table = {"pwiser": _prefixed(evaluate(model, test, cfg))}
    for label, other in (others or {}).items():
        table[label] = _prefixed(evaluate(other, test, cfg))
    table["logistic_regression"] = _prefixed(_one_hot_logreg(train, test, seed=cfg.seed))
    constant = np.zeros(len(test["click"]))
    table["constant"] = {"test_auc_ctr": auc(test["click"], constant, name="constant auc_ctr"),
                         "test_auc_ctcvr": auc(test["click"] * test["conversion"], constant, name="constant auc_ctcvr")}
    return table


def _prefixed(metrics: dict[str, float]) -> dict[str, float]:
    return {f"test_{k}": v for k, v in metrics.items()}
