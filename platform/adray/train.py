"""``adray train``: any workload through its one training entry, then publish.

The platform does the same for every workload: resolve the dataset, name the run (workload,
config, dataset hash, workers, GPU: the same command again resumes it), build a
:class:`~adray.workload.TrainContext`, call ``workload.trainer.train(cfg, ctx)``, add the resolved
config and meta to the returned model directory, and publish it to the registry. Whether the
trainer runs Ray Train workers or an RLlib algorithm is the trainer's business.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

from adray.data import DataError, dataset_exists, dataset_uri, is_remote, read_dataset, read_manifest
from adray.models import finish_model_dir
from adray.paths import runs_storage, scratch_root
from adray.registry import Registry
from adray.storage import Storage
from adray.workload import (
    GENERATE,
    Reporter,
    TrainConfig,
    TrainContext,
    TrainResult,
    Workload,
    data_dir_for,
    get_workload,
)


@dataclasses.dataclass(frozen=True)
class TrainOutcome:
    metrics: dict[str, float]
    model_ref: str | None
    model_dir: Path
    history: list[dict[str, float]]
    timings: dict[str, float]
    """start-up phases: ray_init_s, data_load_s, trainer_fit_s, first_batch_s, ..."""


def prepare_data(workload: Workload, cfg: TrainConfig, progress: bool = False) -> Path | str:
    """The dataset of ``cfg``: a local directory, or a storage URI string (``s3://...``). It must
    exist (its files too), unless ``data`` is ``generate``: then the workload's generator makes it on
    first use (and it is reused after). Never anything else: a mistyped path fails and names itself
    instead of training on made-up data; an unreachable bucket says why."""
    data_dir = data_dir_for(workload, cfg)
    if dataset_exists(data_dir):
        read_dataset(data_dir)  # every listed file is there: fail now, not in a worker mid-epoch
        return data_dir
    if cfg.data == GENERATE and workload.make_data is not None:
        if progress:
            print(f"[adray] data: generate -> making {data_dir} with the {workload.name} generator")
        workload.make_data(cfg, data_dir)
        return data_dir
    how = [f"`adray data import FORMAT FILE... --out {data_dir}`"]
    if workload.make_data is not None:
        how.insert(0, f"`adray data make {workload.name} --config CONFIG --out {data_dir}`")
        how.append(f"`--set data={GENERATE}` (the generator's data, made on first use)")
    raise DataError(f"{data_dir}: no dataset there (no manifest.json); make one with " + ", or ".join(how))


def run_name_for(workload: str, cfg: TrainConfig, data_hash: str, num_workers: int, use_gpu: bool) -> str:
    key = json.dumps([workload, cfg.key_dict(), data_hash, num_workers, use_gpu], sort_keys=True)
    return f"{workload}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def make_context(wl: Workload, cfg: TrainConfig, data_dir: Path | str, *, num_workers: int = 1, use_gpu: bool = False,
                 precision: Literal["fp32", "bf16"] = "fp32", run_name: str | None = None,
                 runs: Storage | None = None, scratch: Path | None = None, cpus_per_worker: float | None = None,
                 progress: bool = False, reporter: Reporter | None = None,
                 placement: Literal["pack", "spread", "strict_spread"] = "pack") -> TrainContext:
    from adray.runtime import check_placement

    manifest = read_manifest(data_dir)
    name = run_name or run_name_for(wl.name, cfg, manifest["content_hash"], num_workers, use_gpu)
    run_dir = (scratch or scratch_root()) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    return TrainContext(data_dir=data_dir, run_dir=run_dir, run_name=name, storage=runs or runs_storage(),
                        num_workers=num_workers, use_gpu=use_gpu, precision=precision,
                        cpus_per_worker=cpus_per_worker, progress=progress, reporter=reporter or Reporter(),
                        placement=check_placement(placement))


def run_training(
    workload: Workload | str,
    cfg: TrainConfig,
    *,
    num_workers: int = 1,
    use_gpu: bool = False,
    precision: Literal["fp32", "bf16"] = "fp32",
    publish: bool = True,
    progress: bool = False,
    run_name: str | None = None,
    runs: Storage | None = None,
    scratch: Path | None = None,
    cpus_per_worker: float | None = None,
    model_name: str | None = None,
    reporter: Reporter | None = None,
    placement: Literal["pack", "spread", "strict_spread"] = "pack",
) -> TrainOutcome:
    """Train ``cfg`` with the workload's trainer and (optionally) publish the model.

    Raises:
        ResourceError: more workers (CPUs, GPUs) than the cluster has or can scale to, checked
            before any actor starts.
        KeyboardInterrupt: Ctrl-C; the run is stopped within seconds (its last checkpoint is kept,
            so the same call resumes it).
    """
    from adray.runtime import check_count, check_train_workers, ensure_ray

    wl = get_workload(workload) if isinstance(workload, str) else workload
    check_count("--workers", num_workers)
    data_dir = prepare_data(wl, cfg, progress)  # before Ray: a missing dataset fails in a second
    t0 = time.perf_counter()
    ensure_ray()
    ray_init_s = time.perf_counter() - t0
    check_train_workers(num_workers, use_gpu)  # before any actor starts: 64 workers on 2 CPUs would never fail
    ctx = make_context(wl, cfg, data_dir, num_workers=num_workers, use_gpu=use_gpu, precision=precision,
                       run_name=run_name, runs=runs, scratch=scratch, cpus_per_worker=cpus_per_worker,
                       progress=progress, reporter=reporter, placement=placement)
    try:
        result = wl.trainer.train(cfg, ctx)
    except KeyboardInterrupt:  # the trainer stopped what it started (Ray Train: its controller and workers)
        print(f"[adray] interrupted: {wl.name} training stopped, nothing published", file=sys.stderr, flush=True)
        raise
    finish_model_dir(result.model_dir, cfg, result.meta)
    model_ref = publish_result(wl, cfg, result, ctx, model_name) if publish else None
    timings = {"ray_init_s": ray_init_s, **result.timings}
    return TrainOutcome(result.metrics, model_ref, result.model_dir, result.history, timings)


def publish_result(wl: Workload, cfg: TrainConfig, result: TrainResult, ctx: TrainContext,
                   model_name: str | None = None, extra: dict[str, Any] | None = None) -> str:
    """Publish a finished model directory (config and meta already in it); returns ``name@vNNNN``."""
    manifest = read_manifest(ctx.data_dir)
    mv = Registry().publish(model_name or wl.name, result.model_dir, {
        "workload": wl.name,
        "config": cfg.to_dict(),
        "dataset": dataset_uri(ctx.data_dir) if is_remote(ctx.data_dir) else str(Path(ctx.data_dir).absolute()),
        "dataset_hash": manifest["content_hash"],
        "metrics": result.metrics,
        "num_workers": ctx.num_workers,
        "use_gpu": ctx.use_gpu,
        "precision": ctx.precision,
        "run": ctx.storage.child(ctx.run_name).display(),
        **(extra or {}),
    })
    return mv.ref
