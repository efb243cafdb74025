"""Streaming ingest (adray.ingest) without a Ray cluster: the path choice, pwiser's vectorised
conversion against the in-memory loader, the loop over streamed batches against the in-memory loop
(same batches -> same weights), the bounded evaluation read, and a bad row group named by file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from adray.data import DataError, DatasetWriter, write_dataset
from adray.epochs import LoopState, MemoryBatches, run_epochs
from adray.ingest import (
    EvalSplit,
    IngestOptions,
    StreamBatches,
    choose,
    evaluate,
    locate_bad_file,
    read_eval_split,
    readers_for,
)


def test_choose_memory_up_to_the_threshold_then_stream() -> None:
    opts = IngestOptions(memory_max_rows=1000)
    assert choose(opts, 1000, True)[0] == "memory"
    assert choose(opts, 1001, True)[0] == "stream"
    assert choose(opts, 10**9, False)[0] == "memory"  # a workload without stream_convert
    assert choose(dataclasses.replace(opts, mode="stream"), 10, True)[0] == "stream"
    assert choose(dataclasses.replace(opts, mode="memory"), 10**9, True)[0] == "memory"
    with pytest.raises(ValueError, match="stream_convert"):
        choose(dataclasses.replace(opts, mode="stream"), 10, False)


def test_options_come_from_the_config() -> None:
    from workloads.pwiser.config import PWiseRConfig

    cfg = PWiseRConfig().override({"ingest": "stream", "ingest_memory_max_rows": 5, "ingest_shuffle": False})
    assert IngestOptions.of(cfg) == IngestOptions(mode="stream", memory_max_rows=5, shuffle=False)
    assert IngestOptions.of(object()) == IngestOptions()  # a workload without ingest fields


def test_read_tasks_follow_the_worker_count_unless_asked() -> None:
    from adray.config import ConfigError
    from workloads.pwiser.config import PWiseRConfig

    assert [readers_for(w) for w in (1, 2, 4, 5, 8)] == [1, 1, 1, 2, 2]  # one per 4 Train workers
    assert readers_for(2, 3) == 3
    assert IngestOptions.of(PWiseRConfig().override({"ingest_readers": 2})).readers == 2
    with pytest.raises(ConfigError, match="ingest_readers=-1"):
        PWiseRConfig().override({"ingest_readers": -1})


def test_pwiser_stream_convert_equals_the_in_memory_loader(tmp_path: Path) -> None:
    from workloads.pwiser.config import PWiseRConfig
    from workloads.pwiser.data import load_split, make_data, model_meta
    from workloads.pwiser.train import stream_columns, stream_convert

    cfg = PWiseRConfig().override({"rows": 600, "num_users": 50, "num_items": 30})
    make_data(cfg, tmp_path / "d")
    meta = model_meta(tmp_path / "d", cfg)
    whole = load_split(tmp_path / "d", "train", cfg)
    frame = pd.read_parquet(tmp_path / "d" / "train", columns=stream_columns(meta, cfg))
    batch = {c: frame[c].to_numpy() for c in frame.columns}
    batch["user_id"] = batch["user_id"].copy()
    got = stream_convert(batch, cfg, meta, "here")
    assert set(got) == set(whole)
    for k in whole:
        assert got[k].dtype == whole[k].dtype and np.array_equal(got[k], whole[k]), k
    batch["user_id"][:3] = [-1, 10**9, 5]  # out of vocab -> 0 (unknown), like FeatureMap.arrays
    assert stream_convert(batch, cfg, meta, "here")["x_cat"][:3, 0].tolist() == [0, 0, 5]
    batch["click"] = batch["click"].copy()
    batch["click"][7] = 0.5
    with pytest.raises(DataError, match=r"here: label 'click' row 7"):
        stream_convert(batch, cfg, meta, "here")


# ----------------------------------------------------------------------------- the loop


class _Shard:
    """A stand-in for a Ray Train dataset shard: ``iter_torch_batches`` over arrays, in order."""

    def __init__(self, arrays: dict[str, np.ndarray], fail_at: int | None = None) -> None:
        self.arrays, self.fail_at, self.calls = arrays, fail_at, []

    def iter_torch_batches(self, *, batch_size: int, collate_fn: Any, drop_last: bool, **kw: Any) -> Any:
        self.calls.append(kw)
        n = len(next(iter(self.arrays.values())))
        for i, a in enumerate(range(0, n - batch_size + 1 if drop_last else n, batch_size)):
            if i == self.fail_at:
                raise OSError("Couldn't deserialize thrift: corrupt row group")
            yield collate_fn({k: v[a:a + batch_size] for k, v in self.arrays.items()})


@dataclasses.dataclass(frozen=True)
class _Cfg:
    epochs: int = 3
    batch_size: int = 8
    seed: int = 0
    grad_clip: float = 0.0
    ingest_shuffle: bool = False
    max_steps_per_epoch: int = 0


class _Spec:
    objective, mode = "loss", "min"

    def loss(self, model: Any, batch: dict[str, torch.Tensor], cfg: Any) -> tuple[torch.Tensor, dict]:
        return ((model(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean(), {}

    def evaluate(self, model: Any, arrays: dict[str, np.ndarray], cfg: Any) -> dict[str, float]:
        x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
        return {"loss": float(((model(x).squeeze(1) - y) ** 2).mean())}


def _data(n: int = 68) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return {"x": x, "y": x @ np.array([1.0, -2.0, 0.5], np.float32)}


def _train(train: Any, cfg: _Cfg = _Cfg()) -> tuple[torch.nn.Module, LoopState]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    state = run_epochs(_Spec(), cfg, model, torch.optim.Adam(model.parameters(), 1e-2), train, _data(16),
                       state=LoopState())
    return model, state


def test_streamed_batches_give_the_in_memory_model() -> None:
    """No shuffle, one worker: the same batches in the same order, so the same weights."""
    data = _data()
    mem, s1 = _train(data)
    shard = _Shard(data)
    streamed, s2 = _train(StreamBatches(shard, lambda b: b, rows=68, batch_size=8, seed=0,
                                        opts=IngestOptions(shuffle=False)))
    for a, b in zip(mem.parameters(), streamed.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert [h["train_loss"] for h in s1.history] == pytest.approx([h["train_loss"] for h in s2.history], abs=1e-6)
    assert len(shard.calls) == 3 and shard.calls[0]["local_shuffle_buffer_size"] is None


def test_shuffled_stream_is_seeded_per_epoch_and_rank() -> None:
    shard = _Shard(_data())
    batches = StreamBatches(shard, lambda b: b, rows=68, batch_size=8, seed=3, rank=1, world=2,
                            opts=IngestOptions(shuffle_buffer=0))
    assert batches.steps == 68 // 2 // 4 and batches.rows_per_step == 8
    for epoch in range(2):
        list(batches.epoch(epoch))
    seeds = [c["local_shuffle_seed"] for c in shard.calls]
    assert len(set(seeds)) == 2 and all(c["local_shuffle_buffer_size"] == 32 for c in shard.calls)


def test_the_step_cap_stops_every_epoch() -> None:
    _, state = _train(_data(), _Cfg(epochs=2, max_steps_per_epoch=3))
    assert [h["samples_per_s"] > 0 for h in state.history] == [True, True]
    assert all("steady_samples_per_s" in h for h in state.history)


def test_a_read_error_mid_epoch_is_raised_as_on_error_says() -> None:
    batches = StreamBatches(_Shard(_data(), fail_at=2), lambda b: b, rows=68, batch_size=8, seed=0,
                            on_error=lambda exc: DataError(f"file X: {exc}"))
    with pytest.raises(DataError, match="file X: Couldn't deserialize"):
        _train(batches)


def test_memory_batches_without_shuffle_are_the_stored_order() -> None:
    data = {"i": np.arange(20)}
    got = [b["i"].tolist() for b in MemoryBatches(data, 4, 0, shuffle=False).epoch(0)]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]]


# ----------------------------------------------------------------------------- files


def _toy_dataset(path: Path, n: int = 300) -> Path:
    x = np.arange(n, dtype=np.float32)
    frame = pd.DataFrame({"x": x, "y": 2 * x})
    write_dataset(path, {"train": frame, "val": frame, "test": frame}, source="toy")
    return path


def test_eval_split_is_bounded(tmp_path: Path) -> None:
    data = _toy_dataset(tmp_path / "d")
    got = read_eval_split(str(data), "val", ["x"], lambda b: {"x": b["x"] * 1}, max_rows=120)
    assert got["x"].tolist() == list(range(120))


def test_a_corrupt_row_group_is_named_by_file(tmp_path: Path) -> None:
    data = _toy_dataset(tmp_path / "d")
    (part,) = sorted((data / "train").glob("*.parquet"))
    raw = bytearray(part.read_bytes())
    raw[4:200] = b"\xff" * 196  # the first row group's pages; the footer stays readable
    part.write_bytes(bytes(raw))
    err = locate_bad_file(str(data), "train", None, OSError("read task failed"))
    assert isinstance(err, DataError) and part.name in str(err) and "OSError" in str(err)


class _MeanSpec:
    """A workload that evaluates batch by batch: outputs are the rows' x; the metric their mean."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def evaluate(self, model: Any, arrays: dict[str, np.ndarray], cfg: Any) -> dict[str, float]:
        return self.eval_metrics(self.eval_outputs(model, arrays, cfg), cfg)

    def eval_outputs(self, model: Any, arrays: dict[str, np.ndarray], cfg: Any) -> dict[str, np.ndarray]:
        self.batches.append(len(arrays["x"]))
        return {"x": arrays["x"]}

    def eval_metrics(self, out: dict[str, np.ndarray], cfg: Any) -> dict[str, float]:
        return {"mean": float(out["x"].mean()), "rows": float(len(out["x"]))}


def test_a_split_evaluated_batch_by_batch_gives_the_whole_split_s_metrics(tmp_path: Path) -> None:
    """Row group by row group over several part files: every row once, the same metrics as the split
    held as arrays; ``max_rows`` keeps the first rows."""
    with DatasetWriter(tmp_path / "d", source="toy", part_rows=250, row_group_rows=100) as w:
        for a in range(0, 1000, 300):
            w.write("val", pd.DataFrame({"x": np.arange(a, min(a + 300, 1000), dtype=np.float64)}))
        w.close()
    spec = _MeanSpec()
    split = EvalSplit(str(tmp_path / "d"), "val", ["x"], lambda b: {"x": b["x"] * 1})
    assert evaluate(spec, None, split, None) == {"mean": 499.5, "rows": 1000.0}
    assert len(spec.batches) > 4 and max(spec.batches) <= 100  # never more than a row group at a time
    whole = {"x": np.arange(1000, dtype=np.float64)}
    assert evaluate(spec, None, whole, None) == {"mean": 499.5, "rows": 1000.0}
    first = EvalSplit(str(tmp_path / "d"), "val", ["x"], lambda b: {"x": b["x"] * 1}, max_rows=150)
    assert evaluate(spec, None, first, None) == {"mean": 74.5, "rows": 150.0}
