"""Leak guard: at import, drop a feature column that determines the label or the action.

A column "determines" a target when either figure below says so, both measured **held out**
(2-fold over a seeded half/half split of the rows: a table built on one half is scored on the
other, and the two folds are averaged), so that a column with one value per row (a row index, a
cost with six decimals, an id) cannot look like a leak by memorising its own rows:

* ``lookup_accuracy``: the accuracy of a lookup table on that column alone (its value -> the
  most frequent target value in the other half; an unseen value -> the majority target). Leak
  when it is >= ``LOOKUP_ACCURACY`` (0.99) **and** its error is at most ``ERROR_SHARE`` (10%) of
  the majority guess's error. The second condition keeps a rare label (conversion at 0.3%, whose
  majority guess is already 99.7% right) from flagging every column.
* ``entropy_ratio``: H(target | column) / H(target), with H(target | column) estimated as the
  held-out cross-entropy of the column's table (counts shrunk towards the marginal with weight
  one row), an upper bound on the conditional entropy. Leak when <= ``ENTROPY_RATIO`` (0.05):
  the column leaves less than 5% of the target's uncertainty.

Why these thresholds: on real ad logs, a legitimate single feature sits far from both. On the
public Criteo journeys the most informative legitimate context column (``cat6``) reaches lookup
accuracy 0.656 against the majority's 0.623 (8% of the errors removed) and an entropy ratio of
about 0.6, while ``cat8`` (a one-to-one code of the channel) scores 1.000 and 0.000. The
thresholds sit near the leak end so that a leak survives a little noise (1% of corrupted rows
still scores >= 0.99), and far enough from legitimate features that none is dropped.

Targets with fewer than ``MIN_ROWS`` rows, or fewer than ``MIN_MINORITY`` rows outside the
majority class, are not measured (too little data to tell a leak from chance); the report says so.
At most ``MAX_ROWS`` rows (a seeded sample) are measured, so the guard costs seconds on large files.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from adray.data.dataset import DataError

LOOKUP_ACCURACY = 0.99
ERROR_SHARE = 0.1
ENTROPY_RATIO = 0.05
MIN_ROWS = 200
MIN_MINORITY = 20
MAX_ROWS = 1_000_000


@dataclasses.dataclass(frozen=True)
class Measure:
    """How well one feature column alone predicts one target, held out."""

    column: str
    target: str
    lookup_accuracy: float
    majority_accuracy: float
    entropy_ratio: float
    rows: int

    @property
    def leaky(self) -> bool:
        lookup = (self.lookup_accuracy >= LOOKUP_ACCURACY
                  and 1 - self.lookup_accuracy <= ERROR_SHARE * (1 - self.majority_accuracy))
        return lookup or self.entropy_ratio <= ENTROPY_RATIO

    def reason(self) -> str:
        return (f"a lookup table on {self.column!r} alone predicts the {self.target} with held-out "
                f"accuracy {self.lookup_accuracy:.4f} (majority class: {self.majority_accuracy:.4f}); "
                f"H({self.target} | {self.column}) / H({self.target}) = {self.entropy_ratio:.4f} "
                f"(leak: accuracy >= {LOOKUP_ACCURACY} with <= {ERROR_SHARE:.0%} of the majority's "
                f"errors, or ratio <= {ENTROPY_RATIO}; {self.rows} rows)")

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "lookup_accuracy": round(self.lookup_accuracy, 6),
                "majority_accuracy": round(self.majority_accuracy, 6),
                "entropy_ratio": round(self.entropy_ratio, 6), "rows": self.rows, "reason": self.reason()}


@dataclasses.dataclass(frozen=True)
class GuardReport:
    """What the guard measured, dropped and kept; ``meta()`` goes into the dataset manifest."""

    kept_columns: list[str]
    dropped: dict[str, Measure]
    kept_leaky: dict[str, Measure]
    unmeasured: dict[str, str]

    def meta(self) -> dict[str, Any]:
        return {
            "rule": {"lookup_accuracy_min": LOOKUP_ACCURACY, "error_share_max": ERROR_SHARE,
                     "entropy_ratio_max": ENTROPY_RATIO, "held_out": "2-fold, seeded half/half"},
            "dropped": {c: m.to_dict() for c, m in self.dropped.items()},
            "kept_by_user": {c: m.to_dict() for c, m in self.kept_leaky.items()},
            "not_measured": dict(self.unmeasured),
        }


def _codes(values: np.ndarray | pd.Series) -> np.ndarray:
    return pd.factorize(pd.Series(values), use_na_sentinel=False)[0].astype(np.int64)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def measure(x: np.ndarray | pd.Series, y: np.ndarray | pd.Series, column: str, target: str,
            seed: int = 0) -> Measure | None:
    """Held-out lookup accuracy and entropy ratio of target ``y`` given column ``x`` (see module
    docstring); None when there are too few rows, or too few outside the majority class."""
    xc, yc = _codes(x), _codes(y)
    rng = np.random.default_rng((seed, 0x1EA6))  # a stream of its own: never the data's generator
    if len(xc) > MAX_ROWS:
        take = np.sort(rng.choice(len(xc), MAX_ROWS, replace=False))
        xc, yc = _codes(xc[take]), yc[take]
    n, n_cls, n_x = len(yc), int(yc.max()) + 1 if len(yc) else 0, int(xc.max()) + 1 if len(xc) else 0
    if n < MIN_ROWS or n - np.bincount(yc).max() < MIN_MINORITY:
        return None
    h_y = _entropy(np.bincount(yc) / n)
    half = np.zeros(n, bool)
    half[rng.permutation(n)[: n // 2]] = True
    acc, acc0, xent = [], [], []
    for fit in (half, ~half):
        ev = ~fit
        counts = np.bincount(xc[fit] * n_cls + yc[fit], minlength=n_x * n_cls).reshape(n_x, n_cls)
        prior = (np.bincount(yc[fit], minlength=n_cls) + 0.5) / (fit.sum() + 0.5 * n_cls)  # (C,)
        majority = int(prior.argmax())
        seen = counts.sum(1) > 0
        table = np.where(seen, counts.argmax(1), majority)  # (X,)
        acc.append(float(np.mean(table[xc[ev]] == yc[ev])))
        acc0.append(float(np.mean(yc[ev] == majority)))
        cnt = counts[xc[ev]]  # (n_ev, C)
        p = (cnt[np.arange(ev.sum()), yc[ev]] + prior[yc[ev]]) / (cnt.sum(1) + 1.0)
        xent.append(float(-np.mean(np.log2(p))))
    ratio = float(np.mean(xent)) / h_y if h_y > 0 else 1.0
    return Measure(column, target, float(np.mean(acc)), float(np.mean(acc0)), min(ratio, 1.0), n)


def leak_guard(
    frame: pd.DataFrame,
    features: Sequence[str],
    targets: Mapping[str, np.ndarray | pd.Series],
    keep: Sequence[str] = (),
    where: str = "",
    keep_option: str = "keep_leaky",
) -> GuardReport:
    """Measure every feature column against every target; drop the leaky ones unless kept.

    Args:
        frame: the imported rows (all splits together).
        features: the columns the model would see.
        targets: name -> values (the action, the labels) per row of ``frame``.
        keep: columns the user keeps even when leaky (the ``keep_leaky`` config field).
        where: the file(s), for the message.
        keep_option: the config field that keeps a column, for the message.

    Returns:
        The report; ``kept_columns`` are ``features`` without the dropped ones, in order.
        Each drop (and each leaky column kept on request) is printed to stderr.

    Raises:
        DataError: ``keep`` names a column that is not a feature column.
    """
    unknown = [c for c in keep if c not in features]
    if unknown:
        raise DataError(f"{where}: {keep_option} names {unknown}, which are not feature columns; "
                        f"feature columns: {list(features)[:30]}")
    dropped: dict[str, Measure] = {}
    kept_leaky: dict[str, Measure] = {}
    unmeasured: dict[str, str] = {}
    for target, y in targets.items():
        y = np.asarray(y)
        for col in features:
            if col in dropped or col in kept_leaky:
                continue
            m = measure(frame[col].to_numpy(), y, col, target)
            if m is None:
                unmeasured[target] = (f"fewer than {MIN_ROWS} rows or fewer than {MIN_MINORITY} "
                                      "outside the majority class")
                break
            if m.leaky:
                (kept_leaky if col in keep else dropped)[col] = m
    for col, m in dropped.items():
        print(f"leak guard: {where}: dropped feature column {col!r}: {m.reason()}. "
              f"To keep it anyway: {keep_option}: [{col}] (--set {keep_option}=[{col}])", file=sys.stderr)
    for col, m in kept_leaky.items():
        print(f"leak guard: {where}: kept leaky feature column {col!r} ({keep_option}): {m.reason()}",
              file=sys.stderr)
    kept = [c for c in features if c not in dropped]
    return GuardReport(kept, dropped, kept_leaky, unmeasured)
