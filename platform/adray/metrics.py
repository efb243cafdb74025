"""Shared offline metrics (scikit-learn underneath), safe on degenerate splits.

A metric that is undefined on the given labels (AUC with one class, anything on an empty split)
returns ``nan`` and emits a :class:`MetricWarning` that says why, instead of raising deep inside
scikit-learn or silently returning a misleading 0.5.
"""

from __future__ import annotations

import warnings

import numpy as np


class MetricWarning(UserWarning):
    """A metric could not be computed on this split (the value returned is NaN)."""


def _undefined(name: str, reason: str) -> float:
    warnings.warn(f"{name}: {reason}; returning NaN", MetricWarning, stacklevel=3)
    return float("nan")


def _as_1d(values: np.ndarray, name: str, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:  # a (N, 1) column from a model head
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name}: {what} must be 1-D, got shape {np.asarray(values).shape}")
    return arr


def auc(y_true: np.ndarray, y_score: np.ndarray, name: str = "auc") -> float:
    """ROC AUC of binary labels ``y_true`` (0/1) against scores; NaN (with a reason) if undefined.

    Args:
        y_true: (N,) labels in {0, 1}.
        y_score: (N,) scores, higher = more likely positive.
        name: metric name used in the warning / error text.

    Raises:
        ValueError: shapes differ, labels are not 0/1, or scores are not finite.
    """
    y = _as_1d(y_true, name, "labels")
    s = _as_1d(y_score, name, "scores").astype(np.float64)
    if y.shape != s.shape:
        raise ValueError(f"{name}: labels shape {y.shape} != scores shape {s.shape}")
    if len(y) == 0:
        return _undefined(name, "empty split (0 labels)")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{name}: labels must be 0 or 1, got values {np.unique(y)[:10].tolist()}")
    if not np.isfinite(s).all():
        raise ValueError(f"{name}: {int((~np.isfinite(s)).sum())} non-finite score(s)")
    positives = int(y.sum())
    if positives in (0, len(y)):
        only = "1" if positives else "0"
        return _undefined(name, f"only one class (all {only}) in {len(y)} labels, AUC is undefined")
    from sklearn.metrics import roc_auc_score  # here: importing scikit-learn costs ~1.9 s a process

    return float(roc_auc_score(y, s))


def macro_prf(
    y_true: np.ndarray, y_pred: np.ndarray, labels: list[int] | None = None, name: str = "macro"
) -> dict[str, float]:
    """Macro-averaged precision, recall and F1 of class predictions.

    Args:
        y_true: (N,) true class ids.
        y_pred: (N,) predicted class ids.
        labels: the classes to average over (default: those present in either array). Giving them
            keeps the average comparable across splits where a class is absent (it scores 0).
        name: prefix used in warnings.

    Returns:
        ``{"f1", "precision", "recall"}``; all NaN (with a warning) on an empty split.
    """
    y = _as_1d(y_true, name, "labels")
    p = _as_1d(y_pred, name, "predictions")
    if y.shape != p.shape:
        raise ValueError(f"{name}: labels shape {y.shape} != predictions shape {p.shape}")
    if len(y) == 0:
        nan = _undefined(name, "empty split (0 labels)")
        return {"f1": nan, "precision": nan, "recall": nan}
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        y, p, labels=labels, average="macro", zero_division=0
    )
    return {"f1": float(f1), "precision": float(precision), "recall": float(recall)}
