"""pwiser data: generator invariants, AliExpress / Ali-CCP import, and errors naming file/column/row."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adray.data import DataError, read_dataset
from workloads.pwiser.config import PWiseRConfig
from workloads.pwiser.data import (
    generate,
    import_alicpp,
    import_aliexpress,
    load_split,
    make_data,
    model_meta,
)

CFG = PWiseRConfig(rows=40_000, num_users=500, num_items=200, ctr=0.1, noise_click_share=0.3)


def test_generator_invariants() -> None:
    df = generate(CFG)
    click, conv, noise = df["click"].to_numpy(), df["conversion"].to_numpy(), df["noise_click"].to_numpy()
    assert ((conv == 1) <= (click == 1)).all()  # conversions require clicks
    assert not ((noise == 1) & (conv == 1)).any()  # noise clicks never convert
    assert click.mean() == pytest.approx(CFG.ctr, rel=0.1)
    assert noise.sum() / click.sum() == pytest.approx(CFG.noise_click_share, abs=0.04)
    real = (click == 1) & (noise == 0)
    assert conv[real].mean() == pytest.approx(CFG.cvr, rel=0.2)
    # real clicks follow the affinity hint, noise clicks do not
    hint = df["affinity_hint"].to_numpy()
    assert hint[real].mean() > hint.mean() + 0.2
    assert abs(hint[noise == 1].mean() - hint[click == 0].mean()) < 0.1


def test_generator_is_seeded() -> None:
    a, b = generate(CFG), generate(CFG)
    pd.testing.assert_frame_equal(a, b)
    assert not generate(PWiseRConfig(rows=40_000, num_users=500, num_items=200, seed=1)).equals(a)


def test_make_data_and_load_split(tmp_path: Path) -> None:
    cfg = PWiseRConfig(rows=5_000, num_users=100, num_items=50)
    make_data(cfg, tmp_path / "ds")
    ds = read_dataset(tmp_path / "ds")
    assert set(ds.splits) == {"train", "val", "test"}
    assert sum(ds.manifest["splits"][s]["rows"] for s in ds.splits) == 5_000
    arrays = load_split(tmp_path / "ds", "val", cfg)
    assert set(arrays) == {"x_cat", "x_num", "click", "conversion"}
    assert arrays["x_cat"].dtype == np.int64 and arrays["x_num"].dtype == np.float32
    vocab = [f["vocab_size"] for f in model_meta(tmp_path / "ds", cfg)["feature_map"]["categorical"]]
    assert (arrays["x_cat"] >= 1).all() and (arrays["x_cat"] < np.array(vocab)).all()


def test_import_real_aliexpress_sample(tmp_path: Path, samples: Path) -> None:
    src = samples / "aliexpress_tiny"
    cfg = PWiseRConfig(val_fraction=0.2)
    import_aliexpress([src / "test.csv", src / "train.csv"], tmp_path / "ali", cfg)  # order by name
    ds = read_dataset(tmp_path / "ali")
    assert {s: ds.manifest["splits"][s]["rows"] for s in ds.splits} == {"train": 80, "val": 20, "test": 100}
    fm = ds.meta["feature_map"]
    assert len(fm["categorical"]) == 16 and len(fm["numeric"]) == 63
    test = load_split(tmp_path / "ali", "test", cfg)
    raw = pd.read_csv(src / "test.csv")
    np.testing.assert_array_equal(test["click"], raw["click"].to_numpy(np.float32))
    np.testing.assert_allclose(test["x_num"][:, 0], raw["numerical_1"].to_numpy(np.float32))
    # ids are re-indexed with the train vocabulary; a test value unseen in train maps to 0
    train_raw = pd.read_csv(src / "train.csv")
    unseen = ~raw["categorical_7"].isin(train_raw["categorical_7"]).to_numpy()
    assert unseen.any()
    j = [f["name"] for f in fm["categorical"]].index("categorical_7")
    assert (test["x_cat"][unseen, j] == 0).all() and (test["x_cat"][~unseen, j] > 0).all()


def write_alicpp(path: Path, rows: int = 60, seed: int = 0) -> pd.DataFrame:
    """A small file in the processed Ali-CCP layout (sparse ids, D-prefixed dense, click/purchase)."""
    rng = np.random.default_rng(seed)
    click = (rng.random(rows) < 0.3).astype(int)
    df = pd.DataFrame({
        "click": click, "purchase": click * (rng.random(rows) < 0.3),
        "101": rng.integers(0, 400_000, rows), "121": rng.integers(0, 97, rows), "122": rng.integers(0, 13, rows),
        "205": rng.integers(0, 500_000, rows), "301": rng.integers(0, 3, rows), "109_14": rng.integers(0, 5_000, rows),
        "110_14": rng.integers(0, 100_000, rows), "D109_14": rng.random(rows).round(4), "D508": rng.random(rows) * 3,
    })
    df.to_csv(path, index=False)
    return df


def test_import_alicpp(tmp_path: Path) -> None:
    write_alicpp(tmp_path / "ali_ccp_train.csv", 80, seed=0)
    test_raw = write_alicpp(tmp_path / "ali_ccp_test.csv", 40, seed=1)
    import_alicpp([tmp_path / "ali_ccp_train.csv", tmp_path / "ali_ccp_test.csv"], tmp_path / "ccp", PWiseRConfig())
    ds = read_dataset(tmp_path / "ccp")
    fm = ds.meta["feature_map"]
    assert [f["name"] for f in fm["categorical"]] == ["101", "121", "122", "205", "301", "109_14", "110_14"]
    assert fm["numeric"] == ["D109_14", "D508"] and fm["labels"] == ["click", "conversion"]
    test = load_split(tmp_path / "ccp", "test", PWiseRConfig())
    np.testing.assert_array_equal(test["conversion"], test_raw["purchase"].to_numpy(np.float32))
    assert (test["x_cat"][:, 0] == 0).mean() > 0.9  # field 101 has ~400k ids: almost all unseen in train


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda df: df.drop(columns=["click"]), r"missing column.*click"),
        (lambda df: df.assign(click=df["click"].astype(object).where(df.index != 7, np.nan)), r"'click'.*row 7"),
        (lambda df: df.assign(D508=df["D508"].astype(object).where(df.index != 5, "abc")), r"'D508' row 5.*not a number"),
        (lambda df: df.assign(click=df["click"].where(df.index != 3, 2)), r"'click' row 3.*expected 0 or 1"),
        (lambda df: df.assign(click=0, purchase=(df.index == 4).astype(int)), r"row 4 has conversion=1 but click=0"),
        (lambda df: df.assign(**{"121": df["121"].astype(object).where(df.index != 2, None)}), r"'121' row 2"),
    ],
)
def test_alicpp_errors_name_file_column_row(tmp_path: Path, mutate, match: str) -> None:  # noqa: ANN001
    df = write_alicpp(tmp_path / "train.csv")
    write_alicpp(tmp_path / "test.csv", seed=1)
    mutate(df).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=match) as info:
        import_alicpp([tmp_path / "train.csv", tmp_path / "test.csv"], tmp_path / "out", PWiseRConfig())
    assert "train.csv" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_missing_purchase_and_empty_file(tmp_path: Path) -> None:
    write_alicpp(tmp_path / "test.csv")
    write_alicpp(tmp_path / "train.csv").drop(columns=["purchase"]).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train.csv.*'purchase'"):
        import_alicpp([tmp_path / "train.csv", tmp_path / "test.csv"], tmp_path / "out", PWiseRConfig())
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty.csv: file is empty"):
        import_aliexpress([tmp_path / "empty.csv"], tmp_path / "out", PWiseRConfig())
    (tmp_path / "header.csv").write_text("click,conversion,categorical_1\n")
    with pytest.raises(DataError, match=r"header.csv: no data rows"):
        import_aliexpress([tmp_path / "header.csv"], tmp_path / "out", PWiseRConfig())
    with pytest.raises(DataError, match="does not exist"):
        import_aliexpress([tmp_path / "nope.csv"], tmp_path / "out", PWiseRConfig())
