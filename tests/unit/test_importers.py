"""Every importer takes the public files as they come, gives the same message for the same fault
(naming the file), refuses splits whose feature columns differ, and runs the leak guard."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from adray.cli import app
from adray.config import load_config, parse_set
from adray.data import DataError, read_dataset
from workloads.mtorl import WORKLOAD as MTORL
from workloads.mtorl.config import MTORLConfig
from workloads.mtorl.data import KUAIRAND_STATIC, import_criteo, import_kuairand, load_split, read_sequences
from workloads.pwiser.config import PWiseRConfig
from workloads.pwiser.data import import_alicpp, import_aliexpress

SPLITS = ("train", "val", "test")
CRITEO = MTORLConfig(source="criteo")


def kuairand_rows(users: int = 60, steps: int = 10, seed: int = 0) -> pd.DataFrame:
    """KuaiRand-sequence layout; ``onehot_feat0`` is planted as a code of the channel."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for t in range(steps):
            a = int(rng.integers(0, 3))
            rows.append({"user_id": u, "hourmin": rng.random(), "time_ms": 1000 * t + u, "is_click": int(rng.random() < 0.3),
                         "short": int(a == 0), "mid": int(a == 1), "long": int(a == 2),
                         **{c: float(rng.integers(0, 2)) for c in KUAIRAND_STATIC}, "onehot_feat0": a / 2})
    return pd.DataFrame(rows)


def alicpp_rows(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    click = (rng.random(rows) < 0.3).astype(int)
    return pd.DataFrame({"click": click, "purchase": click * (rng.random(rows) < 0.3),
                         "101": rng.integers(0, 50, rows), "121": rng.integers(0, 9, rows),
                         "D508": rng.random(rows).round(3), "D509": rng.random(rows).round(3)})


# --------------------------------------------------------------------------- faults, per importer


def _mtorl(importer: Callable, cfg: MTORLConfig) -> Callable[[Path, Path], None]:
    return lambda bad, tmp: importer([bad], tmp / "out", cfg)


def _pwiser(importer: Callable, good: Callable[[Path], Path]) -> Callable[[Path, Path], None]:
    """The faulty file as the train split, beside a good test file."""
    return lambda bad, tmp: importer([bad, good(tmp)], tmp / "out", PWiseRConfig())


def _ae_test(tmp: Path) -> Path:
    return Path(__file__).resolve().parents[2] / "data/samples/aliexpress_tiny/test.csv"


def _ccp_test(tmp: Path) -> Path:
    alicpp_rows(50, 1).to_csv(tmp / "ccp_test.csv", index=False)
    return tmp / "ccp_test.csv"


IMPORTERS = {
    "criteo-sequence": (_mtorl(import_criteo, CRITEO), "criteo_sequence_head.csv"),
    "kuairand-sequence": (_mtorl(import_kuairand, MTORLConfig(source="kuairand")), None),
    "aliexpress": (_pwiser(import_aliexpress, _ae_test), "aliexpress_tiny/train.csv"),
    "alicpp": (_pwiser(import_alicpp, _ccp_test), None),
}


def _header(fmt: str, samples: Path) -> str:
    sample = IMPORTERS[fmt][1]
    if sample:
        return (samples / sample).read_text().splitlines()[0] + "\n"
    frame = kuairand_rows(2, 2) if fmt == "kuairand-sequence" else alicpp_rows(2, 0)
    return ",".join(frame.columns) + "\n"


FAULTS: dict[str, tuple[Callable[[Path, str, Path], Path], str]] = {
    "empty": (lambda d, fmt, s: _write(d / "train.csv", b""), "file is empty; expected a CSV header and rows"),
    "directory": (lambda d, fmt, s: _mkdir(d / "train.csv"), "is a directory; expected a"),
    "header-only": (lambda d, fmt, s: _write(d / "train.csv", _header(fmt, s).encode()), "no data rows (header only)"),
    "ragged": (lambda d, fmt, s: _write(d / "train.csv", b"a,b\n1,2\n1,2,3,4\n"), "not a readable CSV"),
    "binary": (lambda d, fmt, s: _write(d / "train.csv", bytes(range(128, 256)) * 8), "not a readable CSV"),
    "missing": (lambda d, fmt, s: d / "train.csv", "file does not exist"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("fmt", list(IMPORTERS))
def test_same_fault_same_message_naming_the_file(tmp_path: Path, samples: Path, fmt: str, fault: str) -> None:
    make, message = FAULTS[fault]
    bad = make(tmp_path, fmt, samples)
    with pytest.raises(DataError) as info:
        IMPORTERS[fmt][0](bad, tmp_path)
    assert str(info.value).startswith(f"{bad}: {message}"), str(info.value)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the files as released


def test_criteo_sample_as_released_interleaved_crlf_index(tmp_path: Path, samples: Path) -> None:
    path = samples / "criteo_sequence_head.csv"
    raw_bytes = path.read_bytes()
    assert raw_bytes.startswith(b",uid,campaign") and b"\r\n" in raw_bytes  # unnamed index, CRLF
    raw = pd.read_csv(path)
    runs = 1 + int((raw["uid"].to_numpy()[1:] != raw["uid"].to_numpy()[:-1]).sum())
    assert runs > raw["uid"].nunique() + 400  # users interleaved, as released
    import_criteo([path], tmp_path / "ds", CRITEO)
    ds = read_dataset(tmp_path / "ds")
    seqs = pd.concat([read_sequences(tmp_path / "ds", s, CRITEO)[0] for s in SPLITS], ignore_index=True)
    assert seqs["length"].sum() == len(raw) and len(seqs) == raw["uid"].nunique()
    types = [c for c in raw.columns if c.startswith("Type_")]
    assert ds.meta["channels"] == types  # no '\r' left on the last header cell
    action = raw[types].to_numpy().argmax(1)
    for uid in raw["uid"].value_counts().index[:5]:  # a user's steps keep file (= time) order
        row = seqs[seqs["user_id"] == uid].iloc[0]
        mine = raw["uid"].to_numpy() == uid
        assert list(row["action"]) == list(action[mine])
        assert np.allclose(row["cost"], raw.loc[mine, "cost"])
    assert ds.meta["q_columns"] == [f"cat{i}" for i in (1, 2, 3, 4, 5, 6, 7, 9)]
    dropped = ds.meta["leak_guard"]["dropped"]["cat8"]
    assert dropped["target"] == "channel" and dropped["lookup_accuracy"] >= 0.99
    assert load_split(tmp_path / "ds", "train", CRITEO)["state"].shape[-1] == 8


def test_the_criteo_sample_imports_with_the_shipped_config(tmp_path: Path, samples: Path) -> None:
    """README: `adray data import criteo-sequence data/samples/criteo_sequence_head.csv --config criteo`."""
    res = CliRunner().invoke(app, ["data", "import", "criteo-sequence", str(samples / "criteo_sequence_head.csv"),
                                   "--config", "criteo", "--out", str(tmp_path / "ds")])
    assert res.exit_code == 0, (res.output, res.exception)
    cfg = load_config(MTORLConfig, "criteo", MTORL.configs_dir)
    assert cfg.min_len == 10
    rows = {s: v["rows"] for s, v in read_dataset(tmp_path / "ds").manifest["splits"].items()}
    assert rows == {"train": 120, "val": 15, "test": 15}
    assert (samples / "criteo_sequence_head.csv").stat().st_size < 1_000_000


def test_keep_leaky_through_set(tmp_path: Path, samples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`adray data import criteo-sequence ... --config criteo --set keep_leaky=[cat8]` resolves so."""
    cfg = load_config(MTORLConfig, "criteo", MTORL.configs_dir, parse_set(["keep_leaky=[cat8]", "min_len=1"]))
    assert cfg.keep_leaky == ("cat8",)
    import_criteo([samples / "criteo_sequence_head.csv"], tmp_path / "ds", cfg)
    meta = read_dataset(tmp_path / "ds").meta
    assert "cat8" in meta["q_columns"] and meta["q_dim"] == 9
    assert list(meta["leak_guard"]["kept_by_user"]) == ["cat8"] and not meta["leak_guard"]["dropped"]
    assert "kept leaky feature column 'cat8'" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"keep_leaky names \['cat88'\]"):
        import_criteo([samples / "criteo_sequence_head.csv"], tmp_path / "ds2", cfg.override({"keep_leaky": ["cat88"]}))


def test_criteo_zip_gives_the_same_dataset(tmp_path: Path, samples: Path) -> None:
    import zipfile

    src = samples / "criteo_sequence_head.csv"
    with zipfile.ZipFile(tmp_path / "criteo.zip", "w") as z:
        z.write(src, "Criteo_sequence.csv")
    import_criteo([src], tmp_path / "a", CRITEO)
    import_criteo([tmp_path / "criteo.zip"], tmp_path / "b", CRITEO)
    assert read_dataset(tmp_path / "a").manifest["content_hash"] == read_dataset(tmp_path / "b").manifest["content_hash"]


def test_kuairand_planted_leak_is_dropped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kuairand_rows().to_csv(tmp_path / "k.csv")  # with the unnamed index column, like the release
    cfg = MTORLConfig(source="kuairand")
    import_kuairand([tmp_path / "k.csv"], tmp_path / "ds", cfg)
    meta = read_dataset(tmp_path / "ds").meta
    assert list(meta["leak_guard"]["dropped"]) == ["onehot_feat0"]
    assert meta["f_columns"] == [c for c in KUAIRAND_STATIC if c != "onehot_feat0"] and meta["f_dim"] == 18
    assert meta["q_columns"] == ["hourmin", "time_ms"]  # legitimate columns survive
    assert "dropped feature column 'onehot_feat0'" in capsys.readouterr().err
    import_kuairand([tmp_path / "k.csv"], tmp_path / "kept", cfg.override({"keep_leaky": ["onehot_feat0"]}))
    assert read_dataset(tmp_path / "kept").meta["f_dim"] == 19


def test_alicpp_planted_leak_is_dropped(tmp_path: Path) -> None:
    for name, seed in (("train", 0), ("test", 1)):
        df = alicpp_rows(600, seed)
        df.assign(D509=df["click"] * 0.5 + 0.1).to_csv(tmp_path / f"{name}.csv", index=False)
    import_alicpp([tmp_path / "train.csv", tmp_path / "test.csv"], tmp_path / "ds", PWiseRConfig())
    meta = read_dataset(tmp_path / "ds").meta
    assert meta["feature_map"]["numeric"] == ["D508"]
    assert meta["leak_guard"]["dropped"]["D509"]["target"] == "click"
    assert json.dumps(meta["leak_guard"])  # recorded in the manifest


@pytest.mark.parametrize("lacking", ["train", "test"])
@pytest.mark.parametrize("fmt", ["aliexpress", "alicpp"])
def test_split_files_with_different_features_are_refused(tmp_path: Path, samples: Path, fmt: str, lacking: str) -> None:
    if fmt == "aliexpress":
        frames = {s: pd.read_csv(samples / f"aliexpress_tiny/{s}.csv") for s in ("train", "test")}
        cols, importer = ["numerical_5", "categorical_3"], import_aliexpress
    else:
        frames = {"train": alicpp_rows(80, 0), "test": alicpp_rows(40, 1)}
        cols, importer = ["D509"], import_alicpp
    frames[lacking] = frames[lacking].drop(columns=cols)
    for s, df in frames.items():
        df.to_csv(tmp_path / f"{s}.csv", index=False)
    other = "test" if lacking == "train" else "train"
    with pytest.raises(DataError) as info:
        importer([tmp_path / "train.csv", tmp_path / "test.csv"], tmp_path / "out", PWiseRConfig())
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / lacking}.csv: missing feature column(s)"), msg
    assert all(c in msg for c in cols) and f"{tmp_path / other}.csv has" in msg
    assert not (tmp_path / "out").exists()
