"""adray.data.leakguard: a column that determines the target is dropped (message + manifest), an
informative or high-cardinality column survives, keep_leaky keeps it, small data is not judged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from adray.data import DataError, leak_guard
from adray.data.leakguard import ENTROPY_RATIO, LOOKUP_ACCURACY, measure


def planted(n: int = 4000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A 5-class action; ``code`` is a relabelled copy of it with 0.5% of rows corrupted (a leak),
    ``hint`` agrees with it 40% of the time (informative, legitimate), ``row_id`` is unique per row,
    ``noise`` is independent of it."""
    rng = np.random.default_rng(seed)
    y = rng.choice(5, size=n, p=[0.5, 0.2, 0.1, 0.1, 0.1])
    code = np.array([0.3, 0.9, 0.1, 0.7, 0.5])[y]
    flip = rng.random(n) < 0.005
    code[flip] = rng.choice([0.3, 0.9, 0.1, 0.7, 0.5], size=flip.sum())
    hint = np.where(rng.random(n) < 0.4, y, rng.integers(0, 5, n))
    return pd.DataFrame({"code": code, "hint": hint, "row_id": np.arange(n) * 1.37,
                         "noise": rng.random(n).round(2)}), y


def test_planted_leak_is_measured_and_dropped_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    df, y = planted()
    m = measure(df["code"], y, "code", "channel")
    assert m is not None and m.leaky
    assert m.lookup_accuracy >= LOOKUP_ACCURACY and m.entropy_ratio < 0.1
    for col in ("hint", "row_id", "noise"):  # informative, memorisable, irrelevant: all legitimate
        other = measure(df[col], y, col, "channel")
        assert other is not None and not other.leaky, other
        assert other.entropy_ratio > 10 * ENTROPY_RATIO
    report = leak_guard(df, ["code", "hint", "row_id", "noise"], {"channel": y}, where="journeys.csv")
    assert report.kept_columns == ["hint", "row_id", "noise"] and list(report.dropped) == ["code"]
    err = capsys.readouterr().err
    assert "leak guard: journeys.csv: dropped feature column 'code'" in err
    assert "keep_leaky: [code]" in err and "held-out accuracy" in err
    meta = json.loads(json.dumps(report.meta()))  # goes into the manifest as is
    assert meta["dropped"]["code"]["target"] == "channel"
    assert meta["dropped"]["code"]["lookup_accuracy"] >= 0.99 and "reason" in meta["dropped"]["code"]
    assert meta["rule"]["lookup_accuracy_min"] == LOOKUP_ACCURACY


def test_keep_leaky_keeps_the_column_and_records_it(capsys: pytest.CaptureFixture[str]) -> None:
    df, y = planted()
    report = leak_guard(df, ["code", "hint"], {"channel": y}, keep=["code"], where="f.csv")
    assert report.kept_columns == ["code", "hint"] and not report.dropped
    assert list(report.meta()["kept_by_user"]) == ["code"]
    assert "kept leaky feature column 'code'" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"f.csv: keep_leaky names \['cod'\]"):
        leak_guard(df, ["code", "hint"], {"channel": y}, keep=["cod"], where="f.csv")


def test_rare_label_flags_only_the_leak() -> None:
    """Conversion at ~1%: every column's lookup is 99% right, so accuracy alone would flag all;
    the leak must also remove most of the majority guess's errors or the uncertainty."""
    rng = np.random.default_rng(1)
    n = 20_000
    y = (rng.random(n) < 0.01).astype(int)
    df = pd.DataFrame({"copy": y * 3 + 1, "noise": rng.integers(0, 50, n), "weak": y * (rng.random(n) < 0.3)})
    report = leak_guard(df, ["copy", "noise", "weak"], {"conversion": y})
    assert list(report.dropped) == ["copy"]


def test_too_few_rows_are_not_judged() -> None:
    y = np.array([0, 1] * 50)
    report = leak_guard(pd.DataFrame({"copy": y}), ["copy"], {"click": y})
    assert report.kept_columns == ["copy"] and "click" in report.meta()["not_measured"]
