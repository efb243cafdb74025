"""Streaming ingest on the shared Ray: a streamed 2-worker Ray Train run reads disjoint shards whose
union is the training split; the streamed and in-memory paths give the same pwiser and mtorl model
for the same seed and batch order; a row group that fails to decode mid-epoch fails the run with an error
naming the file, and nothing is published."""

from __future__ import annotations

import dataclasses
import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from adray.data import DataError, DatasetWriter, read_dataset
from adray.train import make_context
from adray.train_torch import TorchSpec, TorchTrainer, fit_in_process

pytestmark = pytest.mark.ray


# ----------------------------------------------------------------------------- a toy workload


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    epochs: int = 1
    batch_size: int = 16
    lr: float = 0.01
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    seed: int = 0
    ingest: str = "stream"


def toy_meta(data: Any, cfg: ToyConfig) -> dict[str, Any]:
    return {"record": read_dataset(data).meta["record"]}


def toy_model(cfg: ToyConfig, meta: dict[str, Any]) -> torch.nn.Module:
    return torch.nn.Linear(1, 1)


def toy_loss(model: Any, batch: dict[str, torch.Tensor], cfg: ToyConfig) -> tuple[torch.Tensor, dict]:
    return ((model(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean(), {}


def toy_evaluate(model: Any, arrays: dict[str, np.ndarray], cfg: ToyConfig) -> dict[str, float]:
    with torch.no_grad():
        return {"loss": float(toy_loss(model, {k: torch.from_numpy(v) for k, v in arrays.items()}, cfg)[0])}


def toy_load(data: Any, split: str, cfg: ToyConfig) -> dict[str, np.ndarray]:
    df = read_dataset(data).read(split)
    return {"x": df[["x"]].to_numpy(np.float32), "y": df["y"].to_numpy(np.float32)}


def toy_convert(batch: dict[str, np.ndarray], cfg: ToyConfig, meta: dict[str, Any], where: str,
                ) -> dict[str, np.ndarray]:
    """Records the training rows each worker process converts (one file per process)."""
    if "'train'" in where:
        with open(Path(meta["record"]) / f"{os.getpid()}.txt", "a") as f:
            f.write("".join(f"{i}\n" for i in batch["id"]))
    return {"x": np.asarray(batch["x"], np.float32)[:, None], "y": np.array(batch["y"], np.float32)}


TOY = TorchSpec(load_split=toy_load, model_meta=toy_meta, build_model=toy_model, loss=toy_loss,
                evaluate=toy_evaluate, objective="loss", mode="min",
                stream_columns=lambda meta, cfg: ["id", "x", "y"], stream_convert=toy_convert)


@pytest.fixture(scope="module", autouse=True)
def _pickle_this_module_by_value() -> None:
    """Ray Train workers cannot import a test module: ship its functions by value."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_two_streamed_workers_read_disjoint_shards_whose_union_is_the_split(ray_cluster, adray_home, tmp_path):  # noqa: ANN001
    record = tmp_path / "record"
    record.mkdir()
    n = 320  # 2 ranks x 20 batches of 8 rows: no remainder to drop
    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "toy", source="toy", part_rows=100, row_group_rows=50) as w:  # 4 part files
        for split, rows in (("train", n), ("val", 40), ("test", 40)):
            x = rng.normal(size=rows).astype(np.float32)
            w.write(split, pd.DataFrame({"id": np.arange(rows), "x": x, "y": 3 * x}))
        w.close({"record": str(record)})
    assert len(read_dataset(tmp_path / "toy").split_files("train")[1]) == 4
    cfg = ToyConfig()
    ctx = make_context(types.SimpleNamespace(name="toy"), cfg, str(tmp_path / "toy"), num_workers=2,
                       run_name="toy-streamed-2")
    result = TorchTrainer(TOY).train(cfg, ctx)
    assert result.timings["ingest_stream"] == 1.0
    per_rank = [np.loadtxt(f, dtype=np.int64, ndmin=1) for f in sorted(record.glob("*.txt"))]
    assert len(per_rank) == 2, "two worker processes converted rows"
    assert [len(r) for r in per_rank] == [n // 2, n // 2]  # about half each: exactly, here
    assert not set(per_rank[0]) & set(per_rank[1])  # disjoint
    assert sorted(np.concatenate(per_rank).tolist()) == list(range(n))  # union = the split


@pytest.fixture(scope="module")
def pwiser_data(tmp_path_factory) -> tuple[Any, Path]:  # noqa: ANN001
    from adray.config import load_config
    from adray.workload import get_workload

    wl = get_workload("pwiser")
    cfg = load_config(wl.config_cls, "smoke", wl.configs_dir,
                      {"ingest_shuffle": False, "dropout": 0.0, "epochs": 2, "rows": 3000})
    data = tmp_path_factory.mktemp("pwiser") / "d"
    wl.make_data(cfg, data)
    return cfg, data


@pytest.fixture(scope="module")
def mtorl_data(tmp_path_factory) -> tuple[Any, Path]:  # noqa: ANN001
    from adray.config import load_config
    from adray.workload import get_workload

    wl = get_workload("mtorl")
    cfg = load_config(wl.config_cls, "smoke", wl.configs_dir, {"ingest_shuffle": False, "dropout": 0.0, "epochs": 2})
    data = tmp_path_factory.mktemp("mtorl") / "d"
    wl.make_data(cfg, data)
    return cfg, data


@pytest.mark.parametrize("workload", ["pwiser", "mtorl"])
def test_streamed_and_in_memory_paths_give_the_same_model(ray_cluster, request, workload) -> None:  # noqa: ANN001
    """One worker, no shuffle: both paths see the same batches in the same order (the epoch loop
    and the conversion are the same code), so the weights agree to 1e-6."""
    from adray.workload import get_workload

    spec = get_workload(workload).trainer.spec
    cfg, data = request.getfixturevalue(f"{workload}_data")
    mem = fit_in_process(spec, cfg, data)
    streamed = fit_in_process(spec, cfg, data, ingest_path="stream")
    for k, v in mem.model.state_dict().items():
        torch.testing.assert_close(streamed.model.state_dict()[k], v, atol=1e-6, rtol=0)
    assert streamed.test == pytest.approx(mem.test, abs=1e-6, nan_ok=True)


@pytest.mark.slow
def test_ray_train_streamed_and_in_memory_give_the_same_pwiser_model(ray_cluster, adray_home, pwiser_data) -> None:  # noqa: ANN001
    """The same through Ray Train (driver load + object store vs get_dataset_shard), one worker."""
    from adray.train import run_training

    cfg, data = pwiser_data
    weights = []
    for path in ("memory", "stream"):
        out = run_training("pwiser", cfg.override({"ingest": path, "data": str(data)}), publish=False,
                           run_name=f"pwiser-same-{path}")
        assert out.timings["ingest_stream"] == float(path == "stream")
        weights.append(torch.load(out.model_dir / "model.pt", weights_only=True))
    for k, v in weights[0].items():
        torch.testing.assert_close(weights[1][k], v, atol=1e-6, rtol=0)


@pytest.fixture()
def bad_pwiser_data(pwiser_data, tmp_path) -> tuple[Any, Path, Path]:  # noqa: ANN001
    """The pwiser data with the first row group of its training file overwritten (footer intact)."""
    import shutil

    cfg, good = pwiser_data
    data = tmp_path / "bad"
    shutil.copytree(good, data)
    (part,) = sorted((data / "train").glob("*.parquet"))
    raw = bytearray(part.read_bytes())
    raw[4:2000] = b"\xff" * 1996  # the first row group's pages; the footer (schema, row groups) stays
    part.write_bytes(bytes(raw))
    return cfg, data, part


def test_a_row_group_that_fails_mid_epoch_is_named_by_file(ray_cluster, bad_pwiser_data) -> None:  # noqa: ANN001
    """Ray Data's read task fails (it does not name the file); the stream names it."""
    from adray.workload import get_workload

    cfg, data, part = bad_pwiser_data
    with pytest.raises(DataError, match=f"{part}: a row group cannot be decoded"):
        fit_in_process(get_workload("pwiser").trainer.spec, cfg, data, ingest_path="stream")


@pytest.mark.slow
def test_a_ray_train_run_on_a_bad_file_names_it_and_publishes_nothing(
        ray_cluster, adray_home, bad_pwiser_data) -> None:  # noqa: ANN001
    from adray.registry import Registry
    from adray.train import run_training

    cfg, data, part = bad_pwiser_data
    with pytest.raises(DataError, match=f"{part}: a row group cannot be decoded"):
        run_training("pwiser", cfg.override({"ingest": "stream", "data": str(data)}), run_name="pwiser-bad-file")
    assert Registry().names() == []
