"""adray.metrics: AUC and macro P/R/F1 against hand-computed values; NaN with a reason when undefined."""

import math

import numpy as np
import pytest

from adray.metrics import MetricWarning, auc, macro_prf


def test_auc_hand_computed() -> None:
    # positives {0.8, 0.4}, negatives {0.5, 0.1}: pairs won 1 (0.8>0.5), 1, 0 (0.4<0.5), 1 -> 3/4
    assert auc(np.array([1, 0, 1, 0]), np.array([0.8, 0.5, 0.4, 0.1])) == pytest.approx(0.75)


def test_auc_ties_count_half() -> None:
    assert auc(np.array([1, 0]), np.array([0.3, 0.3])) == pytest.approx(0.5)


def test_auc_accepts_column_vectors() -> None:
    assert auc(np.array([[1], [0]]), np.array([[0.9], [0.1]])) == 1.0


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1]])
def test_auc_one_class_is_nan_with_reason(labels: list[int]) -> None:
    with pytest.warns(MetricWarning, match="only one class"):
        value = auc(np.array(labels), np.linspace(0, 1, len(labels)), name="auc_ctcvr")
    assert math.isnan(value)


def test_auc_empty_is_nan() -> None:
    with pytest.warns(MetricWarning, match="empty"):
        assert math.isnan(auc(np.array([]), np.array([])))


def test_auc_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        auc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="0 or 1"):
        auc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="non-finite"):
        auc(np.array([0, 1]), np.array([0.1, np.nan]))


def test_macro_prf_hand_computed() -> None:
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    # class 0: P 1/2 R 1/2 F 1/2; class 1: P 2/3 R 1 F 0.8; class 2: P 0 R 0 F 0
    out = macro_prf(y, p)
    assert out["precision"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert out["recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert out["f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)


def test_macro_prf_fixed_labels_and_one_class() -> None:
    out = macro_prf(np.array([1, 1]), np.array([1, 1]), labels=[0, 1])
    assert out["f1"] == pytest.approx(0.5)  # absent class 0 scores 0, class 1 scores 1
    with pytest.warns(MetricWarning):
        assert math.isnan(macro_prf(np.array([]), np.array([]))["f1"])
