"""Generators that write in blocks give the files one whole-split write gives: AlignedWriter re-cuts
blocks of any size into the same row groups and parts; DRL-PUT's make_data streams its chunks into
the same dataset (same content_hash) as writing the whole-frame logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adray.data import DatasetWriter, read_dataset, write_dataset
from adray.data import writer as writer_module
from adray.data.aligned import AlignedWriter
from workloads.drlput.actions import ActionSpace, behaviour_probs
from workloads.drlput.config import DRLPUTConfig
from workloads.drlput.data import TEST_STREAM, log_requests, make_data


def test_aligned_writer_blocks_of_any_size_give_the_whole_split_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = {s: pd.DataFrame({"x": rng.normal(size=n), "k": rng.integers(0, 9, n), "s": [f"r{i}" for i in range(n)]})
              for s, n in (("train", 2_345), ("val", 7), ("test", 611))}
    kw = {"source": "t", "seed": 1, "overwrite": True, "part_rows": 1_000, "row_group_rows": 128}
    with DatasetWriter(tmp_path / "whole", **kw) as w:
        for s, df in frames.items():
            w.write(s, df)
        w.close({})
    with DatasetWriter(tmp_path / "blocks", **kw) as w:
        aligned = AlignedWriter(w)
        for s, df in frames.items():
            cuts = np.sort(rng.choice(np.arange(1, len(df)), size=min(len(df) - 1, 25), replace=False))
            for block in np.split(np.arange(len(df)), cuts):
                aligned.write(s, df.iloc[block])
        aligned.write("val", frames["val"].iloc[:0])  # an empty block changes nothing
        aligned.flush()
        w.close({})
    a, b = read_dataset(tmp_path / "whole").manifest, read_dataset(tmp_path / "blocks").manifest
    assert list(b["splits"]) == ["train", "val", "test"]
    assert a["content_hash"] == b["content_hash"] and a["splits"] == b["splits"]


def test_drlput_make_data_streams_the_whole_frame_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several 50k-request chunks, row groups and parts cut inside them: the same files as writing
    the whole-frame logs of every split (the generator before it streamed)."""
    monkeypatch.setattr(writer_module, "PART_ROWS", 70_000)
    monkeypatch.setattr(writer_module, "ROW_GROUP_ROWS", 30_000)
    cfg = DRLPUTConfig(seed=4).override({"behaviour.n_requests": 125_000, "behaviour.policy": "gaussian"})
    make_data(cfg, tmp_path / "streamed")
    b = cfg.behaviour
    probs = behaviour_probs(ActionSpace(cfg.action), b.policy, b.sigma)
    n_val, n_test = (max(10, int(round(b.n_requests * f))) for f in (b.val_fraction, b.test_fraction))
    splits = {"train": log_requests(cfg, b.n_requests - n_val - n_test, cfg.seed * 2 + 1, probs, b.policy),
              "val": log_requests(cfg, n_val, cfg.seed * 2 + 2, probs, b.policy, first_id=b.n_requests),
              "test": log_requests(cfg, n_test, cfg.seed * 2 + TEST_STREAM, probs, b.policy,
                                   first_id=b.n_requests + n_val)}
    ds = read_dataset(tmp_path / "streamed")
    write_dataset(tmp_path / "whole", splits, source=ds.manifest["source"], seed=cfg.seed, meta=ds.meta)
    whole = read_dataset(tmp_path / "whole").manifest
    assert ds.manifest["content_hash"] == whole["content_hash"] and ds.manifest["splits"] == whole["splits"]
    assert [len(ds.manifest["splits"][s]["files"]) for s in ("train", "val", "test")] == [2, 1, 1]
    pd.testing.assert_frame_equal(ds.read("train"), splits["train"])
