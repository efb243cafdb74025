"""Ray Train harness: any ``TorchSpec`` workload, data-parallel on 1..N workers, CPU or GPU.

The driver loads the splits once (``TorchSpec.load_split``), puts them in the object store and
starts a ``TorchTrainer``. Each worker takes a disjoint shard of every epoch's permutation, runs
Adam on ``TorchSpec.loss`` and averages gradients across workers with one coalesced all-reduce
per step. We all-reduce by hand instead of wrapping the model in DDP because workload losses call
model methods other than ``forward`` (logits, auxiliary heads) and ablations leave parameters
unused; both break DDP's forward-driven reducer. The cost is the same single all-reduce.

Every epoch all ranks call ``ray.train.report``; rank 0 attaches a checkpoint (current weights,
optimiser, best weights so far, epoch). A rerun of the same command (same workload, config, data
and worker count -> same run name) resumes from the latest checkpoint; a completed run is
started afresh. At the end rank 0 evaluates the best weights on the test split and returns them;
the driver publishes the best weights to the registry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from adray.data import DataError, read_manifest
from adray.models import write_model_dir
from adray.paths import runs_root
from adray.registry import Registry
from adray.runtime import torch_threads
from adray.workload import TrainConfig, Workload, data_dir_for, get_workload

COMPLETED = "ADRAY_COMPLETED"


@dataclasses.dataclass(frozen=True)
class TrainOutcome:
    metrics: dict[str, float]
    """val_* (best epoch), test_* (best weights), best_epoch, epoch_time_s, samples_per_s, ..."""
    model_ref: str | None
    checkpoint_dir: Path
    history: list[dict[str, float]]
    timings: dict[str, float]
    """start-up phases on the driver: ray_init_s, data_load_s, trainer_fit_s, first_batch_s."""


def prepare_data(workload: Workload, cfg: TrainConfig, progress: bool = False) -> Path:
    """The dataset directory for ``cfg``; generated with the workload's ``make_data`` if absent."""
    data_dir = data_dir_for(workload.name, cfg)
    if not (data_dir / "manifest.json").is_file():
        if workload.make_data is None:
            raise DataError(f"{data_dir}: no dataset; import one with `adray data import ... --out {data_dir}`")
        if progress:
            print(f"[adray] no dataset at {data_dir}: generating it (adray data make {workload.name})")
        workload.make_data(cfg, data_dir)
    return data_dir


def run_name_for(workload: str, cfg: TrainConfig, data_hash: str, num_workers: int, use_gpu: bool) -> str:
    key = json.dumps([workload, cfg.to_dict(), data_hash, num_workers, use_gpu], sort_keys=True)
    return f"{workload}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def run_training(
    workload: Workload | str,
    cfg: TrainConfig,
    *,
    num_workers: int = 1,
    use_gpu: bool = False,
    publish: bool = True,
    progress: bool = False,
    run_name: str | None = None,
    storage_path: Path | None = None,
    cpus_per_worker: float | None = None,
    model_name: str | None = None,
    callbacks: list[Any] | None = None,
) -> TrainOutcome:
    """Train ``cfg`` with Ray Train and (optionally) publish the best model to the registry."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from adray.runtime import ResourceError, cluster_gpus, ensure_ray, worker_cpus

    wl = get_workload(workload) if isinstance(workload, str) else workload
    if wl.torch is None:
        raise TypeError(f"workload {wl.name} trains with fit(), not the Ray Train harness")
    spec = wl.torch
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ensure_ray()
    timings["ray_init_s"] = time.perf_counter() - t0
    if use_gpu and cluster_gpus() < num_workers:
        raise ResourceError(f"--gpu with {num_workers} worker(s), but the cluster has {cluster_gpus()} GPU(s)")

    t1 = time.perf_counter()
    data_dir = prepare_data(wl, cfg, progress)
    manifest = read_manifest(data_dir)
    arrays = {}
    for split in (spec.train_split, spec.val_split, spec.test_split):
        arrays[split] = spec.load_split(data_dir, split, cfg)
        n = _rows(arrays[split])
        if n == 0:
            raise DataError(f"{data_dir}: split {split!r} is empty; expected at least one row")
    meta = spec.model_meta(data_dir, cfg)
    spec.build_model(cfg, meta)  # fail fast on a config/meta mismatch, before any actor starts
    data_ref = ray.put(arrays)
    timings["data_load_s"] = time.perf_counter() - t1

    name = run_name or run_name_for(wl.name, cfg, manifest["content_hash"], num_workers, use_gpu)
    storage = Path(storage_path or runs_root()).absolute()
    run_dir = storage / name
    if (run_dir / COMPLETED).is_file():
        shutil.rmtree(run_dir)  # same command again after success: train afresh
    cpus = cpus_per_worker if cpus_per_worker is not None else worker_cpus(num_workers)
    resources = {"CPU": cpus} | ({"GPU": 1.0} if use_gpu else {})
    reporter = _Progress(progress, cfg.epochs)

    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={
            "workload": wl.name,
            "cfg": cfg.to_dict(),
            "meta": meta,
            "data_ref": data_ref,
            "progress_queue": reporter.queue,
        },
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=0),
            callbacks=callbacks,
        ),
    )
    t2 = time.perf_counter()
    wall_start = time.time()
    with reporter:
        result = trainer.fit()
    timings["trainer_fit_s"] = time.perf_counter() - t2
    if result.error is not None:
        raise result.error
    ret: dict[str, Any] = result.return_value or {}
    history = ret.get("history", [])
    if ret.get("first_batch_unix"):
        before_fit = timings["ray_init_s"] + timings["data_load_s"]
        timings["first_batch_s"] = ret["first_batch_unix"] - wall_start + before_fit
        # Ray Train's share: controller, placement group, worker processes, process group
        timings["workers_up_s"] = ret["loop_start_unix"] - wall_start
        # ours, inside the worker: imports, fetching the arrays, building the model, first batch
        timings["worker_setup_s"] = ret["first_batch_unix"] - ret["loop_start_unix"]
    ckpt_dir = run_dir / "best"
    _materialise_best(result.checkpoint, ckpt_dir, cfg, meta)
    (run_dir / COMPLETED).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))

    metrics = {**ret.get("best", {}), **{f"test_{k}": v for k, v in ret.get("test", {}).items()}}
    metrics["resumed_from_epoch"] = ret.get("resumed_from_epoch", 0)
    if history:
        steady = history[1:] or history
        metrics["epoch_time_s"] = float(np.mean([h["epoch_time_s"] for h in steady]))
        metrics["samples_per_s"] = float(np.mean([h["samples_per_s"] for h in steady]))
    model_ref = None
    if publish:
        mv = Registry().publish(
            model_name or wl.name,
            ckpt_dir,
            {
                "workload": wl.name,
                "config": cfg.to_dict(),
                "dataset": str(data_dir.absolute()),
                "dataset_hash": manifest["content_hash"],
                "metrics": metrics,
                "num_workers": num_workers,
                "run": str(run_dir),
            },
        )
        model_ref = mv.ref
    return TrainOutcome(metrics, model_ref, ckpt_dir, history, timings)


def _rows(arrays: dict[str, np.ndarray]) -> int:
    return len(next(iter(arrays.values()))) if arrays else 0


def _materialise_best(checkpoint: Any, out: Path, cfg: TrainConfig, meta: dict[str, Any]) -> None:
    """Write the publishable directory from the run's last checkpoint (which holds the best weights)."""
    if checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    with checkpoint.as_directory() as d:
        write_model_dir(out, Path(d) / "best.pt", cfg, meta)


# ----------------------------------------------------------------------------- worker side


def _train_loop(config: dict[str, Any]) -> dict[str, Any]:  # runs in every Ray Train worker
    loop_start_unix = time.time()
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    wl = get_workload(config["workload"])
    spec = wl.torch
    assert spec is not None
    cfg = wl.config_cls.from_dict(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(torch_threads())
    data = ray.get(config["data_ref"])
    train, val, test = data[spec.train_split], data[spec.val_split], data[spec.test_split]

    model = spec.build_model(cfg, config["meta"]).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sign = 1.0 if spec.mode == "max" else -1.0
    start_epoch, best, best_state, history = 0, None, None, []
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:  # resume after an interruption
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", map_location=device, weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optim"])
            best_state = torch.load(Path(d) / "best.pt", map_location="cpu", weights_only=True)
            info = json.loads((Path(d) / "info.json").read_text())
        start_epoch, best, history = info["epoch"] + 1, info["best"], info["history"]

    n = _rows(train)
    per_worker = max(1, cfg.batch_size // world)
    steps = max(1, (n // world) // per_worker)
    first_batch_unix = None
    queue = config.get("progress_queue")
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        perm = np.random.default_rng(cfg.seed * 100_003 + epoch).permutation(n)[rank::world]
        t_epoch, loss_sum = time.perf_counter(), 0.0
        for step in range(steps):
            idx = np.sort(perm[step * per_worker : (step + 1) * per_worker])
            batch = {k: torch.from_numpy(np.ascontiguousarray(v[idx])).to(device) for k, v in train.items()}
            if first_batch_unix is None:
                first_batch_unix = time.time()
            loss, _ = spec.loss(model, batch, cfg)
            opt.zero_grad(set_to_none=False)
            loss.backward()
            if world > 1:
                _allreduce_mean([p.grad for p in params], world, dist)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            loss_sum += float(loss.detach())
            if queue is not None and rank == 0 and (step % 20 == 0 or step == steps - 1):
                queue.put_nowait((epoch, step + 1, steps, loss_sum / (step + 1)))
        epoch_time = time.perf_counter() - t_epoch
        row: dict[str, float] = {
            "epoch": epoch,
            "train_loss": loss_sum / steps,
            "epoch_time_s": epoch_time,
            "samples_per_s": steps * per_worker * world / epoch_time,
        }
        checkpoint = None
        if rank == 0:
            model.eval()
            with torch.no_grad():
                row |= {f"val_{k}": float(v) for k, v in spec.evaluate(model, val, cfg).items()}
            score = row.get(f"val_{spec.objective}", float("nan"))
            if best is None or (np.isfinite(score) and sign * score > sign * best[f"val_{spec.objective}"]):
                best = {k: v for k, v in row.items() if k.startswith("val_")} | {"best_epoch": epoch}
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            history.append(row)
            checkpoint = _save_checkpoint(model, opt, best_state, epoch, best, history)
        ray.train.report(row, checkpoint=checkpoint)
        if checkpoint is not None:
            shutil.rmtree(checkpoint.path, ignore_errors=True)
    if rank != 0:
        return {}
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        test_metrics = {k: float(v) for k, v in spec.evaluate(model, test, cfg).items()}
    return {"best": best or {}, "test": test_metrics, "history": history, "first_batch_unix": first_batch_unix,
            "loop_start_unix": loop_start_unix,
            "resumed_from_epoch": start_epoch}


def _save_checkpoint(model, opt, best_state, epoch, best, history):  # noqa: ANN001, ANN202
    import ray.train
    import torch

    d = Path(tempfile.mkdtemp(prefix="adray-ckpt-"))
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, d / "state.pt")
    torch.save(best_state, d / "best.pt")
    (d / "info.json").write_text(json.dumps({"epoch": epoch, "best": best, "history": history}))
    return ray.train.Checkpoint.from_directory(str(d))


def _allreduce_mean(grads, world: int, dist) -> None:  # noqa: ANN001
    """Average gradients across workers with one coalesced all-reduce."""
    import torch

    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


class _Progress:
    """A rich progress bar on the driver, fed by rank 0 through a Ray queue (0-CPU actor)."""

    def __init__(self, enabled: bool, epochs: int) -> None:
        self.enabled, self.epochs, self.queue = enabled, epochs, None
        if enabled:
            from ray.util.queue import Queue

            self.queue = Queue(actor_options={"num_cpus": 0})

    def __enter__(self) -> _Progress:
        if not self.enabled:
            return self
        import threading

        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                             TimeElapsedColumn(), transient=False)
        self._task = self._bar.add_task("training", total=self.epochs, info="starting workers")
        self._bar.start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                epoch, step, steps, loss = self.queue.get(timeout=0.5)  # type: ignore[union-attr]
            except Exception:
                continue
            self._bar.update(self._task, completed=epoch + step / steps,
                             info=f"epoch {epoch + 1}/{self.epochs} step {step}/{steps} loss {loss:.4f}")

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        self._stop.set()
        self._thread.join(timeout=2)
        self._bar.update(self._task, completed=self.epochs)
        self._bar.stop()
        import ray

        ray.kill(self.queue.actor)  # type: ignore[union-attr]
