"""Bad input gets a clear error naming the file/field/parameter, and nothing is published."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import adray


def _assert_nothing_published(home: Path) -> None:
    reg = home / "registry"
    assert not reg.exists() or not list(reg.rglob("manifest.json"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "nosuch"], "unknown workload 'nosuch'; available:"),
        (["train", "pwiser", "--config", "smoke", "--set", "lrr=0.1"], "unknown key(s) ['lrr']"),
        (["train", "pwiser", "--config", "smoke", "--set", "lr=fast"], "lr='fast'; expected a number"),
        (["train", "pwiser", "--config", "nosuch"], "unknown config 'nosuch'"),
        (["eval", "pwiser", "--model", "pwiser@v0042"], "available versions of 'pwiser': none"),
    ],
)
def test_cli_user_errors(tmp_path: Path, args: list[str], message: str) -> None:
    out = adray(*args, home=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    _assert_nothing_published(tmp_path)


def test_tune_space_with_unknown_parameter(tmp_path: Path) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text("workload: pwiser\nconfig: smoke\nmetric: val_auc_ctr\nparams:\n"
                     "  lambda_: {type: float, low: 0.0, high: 1.0}\n")
    out = adray("tune", "pwiser", "--space", str(space), home=tmp_path)
    assert out.returncode == 2
    assert "bad.yaml: parameter 'lambda_' is not a field of PWiseRConfig" in out.stderr
    _assert_nothing_published(tmp_path)


def _ae_csv(path: Path, src: Path, mutate) -> Path:  # noqa: ANN001
    import pandas as pd

    df = pd.read_csv(src)
    df = mutate(df)
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.drop(columns=["conversion"]), "conversion"),
        (lambda df: df.assign(numerical_3=df["numerical_3"].where(df.index != 5, float("nan"))), "numerical_3"),
        (lambda df: df.astype({"numerical_7": object}).assign(
            numerical_7=lambda d: d["numerical_7"].where(d.index != 2, "abc")), "numerical_7"),
        (lambda df: df.iloc[:0], "no data rows"),
    ],
    ids=["missing-label", "nan", "wrong-type", "empty"],
)
def test_import_rejects_bad_files(tmp_path: Path, samples: Path, mutate, message: str) -> None:  # noqa: ANN001
    src = samples / "aliexpress_tiny"
    bad = _ae_csv(tmp_path / "train.csv", src / "train.csv", mutate)
    out = adray("data", "import", "aliexpress", str(bad), str(src / "test.csv"), "--out", str(tmp_path / "ds"),
                home=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "train.csv" in out.stderr and message in out.stderr, out.stderr
    assert not (tmp_path / "ds").exists()  # nothing half-written


def test_train_on_empty_dataset_is_refused(tmp_path: Path) -> None:
    import pandas as pd

    from adray.data import write_dataset

    cols = {"click": [0.0], "conversion": [0.0]}
    ds = tmp_path / "ds"
    write_dataset(ds, {"train": pd.DataFrame(cols)}, source="unit")
    out = adray("train", "pwiser", "--config", "smoke", "--set", f"data={ds}", home=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert str(ds) in out.stderr
    _assert_nothing_published(tmp_path)


def test_missing_dataset_path_fails_and_names_it_instead_of_generating(tmp_path: Path) -> None:
    typo = tmp_path / "dta" / "pwiser"
    out = adray("train", "pwiser", "--config", "smoke", "--set", f"data={typo}", home=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{typo}: no dataset there" in out.stderr and "adray data make pwiser" in out.stderr
    assert "Traceback" not in out.stderr
    assert not typo.exists() and not (tmp_path / "data").exists()  # nothing made up
    _assert_nothing_published(tmp_path)


def test_import_keeps_a_leaky_column_only_when_asked_through_set(tmp_path: Path, samples: Path) -> None:
    """The released Criteo rows import as they come; `--set keep_leaky=[cat8]` keeps the column
    the leak guard would drop, says so, and the manifest records it with its figure."""
    import json

    src = samples / "criteo_sequence_head.csv"
    out = adray("data", "import", "criteo-sequence", str(src), "--config", "criteo", "--set", "min_len=1",
                "--set", "keep_leaky=[cat8]", "--out", str(tmp_path / "ds"), home=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kept leaky feature column 'cat8' (keep_leaky)" in out.stderr
    meta = json.loads((tmp_path / "ds" / "manifest.json").read_text())["meta"]
    assert "cat8" in meta["q_columns"] and meta["leak_guard"]["kept_by_user"]["cat8"]["lookup_accuracy"] >= 0.99
