"""The Ray Train harness: a :class:`TorchSpec` workload, data-parallel on 1..N workers, CPU or GPU.

:class:`TorchTrainer` is the ``Trainer`` a Ray Train workload declares. The driver loads the splits
once (``TorchSpec.load_split``), puts them in the object store and starts Ray Train's
``TorchTrainer``; every worker runs the one epoch loop (:func:`adray.epochs.run_epochs`) on a
disjoint shard of each epoch's permutation, averaging gradients with one all-reduce per step.

Every epoch all ranks call ``ray.train.report``; rank 0 attaches a checkpoint (current weights,
optimiser, best weights so far, epoch). The run lives under ``ctx.storage/ctx.run_name`` (a local
folder or ``s3://...``: Ray Train uploads checkpoints there), so a rerun of the same command resumes
from the latest checkpoint on any node; a completed run is started afresh. At the end rank 0
evaluates the best weights on the test split; the driver writes them as ``model.pt`` into a model
directory under ``ctx.run_dir``.

:func:`fit_in_process` runs the same loop in the calling process (benchmarks and tests).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from adray.data import DataError
from adray.epochs import LoopState, allreduce_mean, allreduce_sum, rows, run_epochs
from adray.runtime import torch_threads
from adray.workload import Arrays, TrainContext, TrainResult

COMPLETED = "ADRAY_COMPLETED"
WEIGHTS_FILE = "model.pt"


@dataclasses.dataclass(frozen=True)
class TorchSpec:
    """What a Ray Train workload gives the harness. All callables are pure functions of their args.

    Attributes:
        load_split: ``(data_dir, split, cfg) -> Arrays``; raises ``DataError`` naming the file/field.
        model_meta: ``(data_dir, cfg) -> dict``: JSON-able facts the network needs (feature map,
            vocab sizes, ...). Saved beside the weights, passed back to ``build_model``.
        build_model: ``(cfg, meta) -> nn.Module`` (the inference network; what Serve loads).
        loss: ``(model, batch, cfg) -> (scalar loss tensor, {name: float})``; batch is a dict of
            tensors on the training device.
        evaluate: ``(model, arrays, cfg) -> {metric: float}`` on one split (model in eval mode).
        objective: metric of ``evaluate`` on the validation split that picks the best epoch.
        mode: ``"max"`` or ``"min"`` for ``objective``.
        step: optional custom optimiser step ``(model, optimizer, batch, cfg, ctx: StepContext) ->
            {name: float}`` (with ``"loss"``) for updates that are not one loss's gradient (several
            backward passes, a validation gradient): it writes ``.grad``, reduces across workers
            with ``ctx.all_reduce`` and calls ``optimizer.step()``; the harness then neither
            averages nor clips. ``loss`` is still what the loss means (e.g. for a plain baseline).
        step_state: ``(cfg, model) -> object`` with ``state_dict``/``load_state_dict`` (and
            optionally ``end_epoch(row)``): the custom step's state, checkpointed every epoch.
    """

    load_split: Callable[[Path, str, Any], Arrays]
    model_meta: Callable[[Path, Any], dict[str, Any]]
    build_model: Callable[[Any, dict[str, Any]], Any]
    loss: Callable[[Any, dict[str, Any], Any], tuple[Any, dict[str, float]]]
    evaluate: Callable[[Any, Arrays, Any], dict[str, float]]
    objective: str
    mode: Literal["max", "min"] = "max"
    step: Callable[..., dict[str, float]] | None = None
    step_state: Callable[[Any, Any], Any] | None = None
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"


class TorchTrainer:
    """The ``Trainer`` of a Ray Train workload (``loop_field = "epochs"``)."""

    loop_field = "epochs"

    def __init__(self, spec: TorchSpec) -> None:
        self.spec = spec
        self.objective, self.mode = spec.objective, spec.mode

    def load(self, path: Path, cfg: Any, meta: dict[str, Any]) -> Any:
        """The network of a model directory (``model.pt``, loaded with ``weights_only``)."""
        import torch

        model = self.spec.build_model(cfg, meta)
        model.load_state_dict(torch.load(Path(path) / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        return model.eval()

    def load_splits(self, data_dir: Path, cfg: Any) -> dict[str, Arrays]:
        spec, out = self.spec, {}
        for split in (spec.train_split, spec.val_split, spec.test_split):
            out[split] = spec.load_split(data_dir, split, cfg)
            if rows(out[split]) == 0:
                raise DataError(f"{data_dir}: split {split!r} is empty; expected at least one row")
        return out

    def train(self, cfg: Any, ctx: TrainContext) -> TrainResult:
        import ray
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

        from adray.runtime import stop_train_controller, worker_cpus

        spec, timings = self.spec, {}
        t1 = time.perf_counter()
        arrays = self.load_splits(ctx.data_dir, cfg)
        meta = spec.model_meta(ctx.data_dir, cfg)
        spec.build_model(cfg, meta)  # fail fast on a config/meta mismatch, before any actor starts
        data_ref = ray.put(arrays)
        timings["data_load_s"] = time.perf_counter() - t1

        run = ctx.storage.child(ctx.run_name)
        if run.is_file(COMPLETED):
            run.delete_dir()  # the same command again after success: train afresh
        cpus = ctx.cpus_per_worker if ctx.cpus_per_worker is not None else worker_cpus(ctx.num_workers)
        resources = {"CPU": cpus} | ({"GPU": 1.0} if ctx.use_gpu else {})
        reporter = _Progress(ctx.progress, cfg.epochs)
        storage_path, storage_fs = ctx.storage.ray_storage()
        trainer = _interruptible_trainer_cls()(
            _train_loop,
            train_loop_config={"spec": spec, "cfg": cfg, "meta": meta, "data_ref": data_ref,
                               "precision": ctx.precision, "progress_queue": reporter.queue},
            scaling_config=ScalingConfig(num_workers=ctx.num_workers, use_gpu=ctx.use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(
                name=ctx.run_name, storage_path=storage_path, storage_filesystem=storage_fs,
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                failure_config=FailureConfig(max_failures=0),
                callbacks=ctx.reporter.train_callbacks() or None,
            ),
        )
        t2, wall_start = time.perf_counter(), time.time()
        try:
            with reporter:
                result = trainer.fit()
        except KeyboardInterrupt:
            if trainer.controller is not None:
                stop_train_controller(trainer.controller)
            print(f"\n[adray] interrupted: Ray Train run {ctx.run_name} stopped (controller and workers); its last "
                  f"checkpoint (if any) is kept under {run.display()}, and the same command resumes from it",
                  file=sys.stderr, flush=True)
            raise
        timings["trainer_fit_s"] = time.perf_counter() - t2
        if result.error is not None:
            raise result.error
        ret: dict[str, Any] = result.return_value or {}
        if ret.get("first_batch_unix"):
            timings["first_batch_s"] = ret["first_batch_unix"] - wall_start + timings["data_load_s"]
            timings["workers_up_s"] = ret["loop_start_unix"] - wall_start  # Ray Train's share
            timings["worker_setup_s"] = ret["first_batch_unix"] - ret["loop_start_unix"]  # ours
        model_dir = ctx.run_dir / "model"
        self._materialise(result.checkpoint, model_dir)
        run.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"), COMPLETED)

        history = ret.get("history", [])
        metrics = {**ret.get("best", {}), **{f"test_{k}": v for k, v in ret.get("test", {}).items()}}
        metrics["resumed_from_epoch"] = ret.get("resumed_from_epoch", 0)
        if history:
            steady = history[1:] or history
            metrics["epoch_time_s"] = float(np.mean([h["epoch_time_s"] for h in steady]))
            metrics["samples_per_s"] = float(np.mean([h["samples_per_s"] for h in steady]))
        return TrainResult(metrics, model_dir, meta, history, timings)

    def salvage(self, cfg: Any, ctx: TrainContext, checkpoint: str | None) -> TrainResult | None:
        """The best weights of an interrupted run's last checkpoint (a trial stopped by ASHA)."""
        if not checkpoint:
            return None
        from ray.train import Checkpoint

        _, fs = ctx.storage.ray_storage()
        model_dir = ctx.run_dir / "model"
        self._materialise(Checkpoint(checkpoint, filesystem=fs), model_dir)
        with Checkpoint(checkpoint, filesystem=fs).as_directory() as d:
            best = json.loads((Path(d) / "info.json").read_text()).get("best") or {}
        return TrainResult(dict(best), model_dir, self.spec.model_meta(ctx.data_dir, cfg))

    @staticmethod
    def _materialise(checkpoint: Any, out: Path) -> None:
        """``out/model.pt`` = the best weights held by ``checkpoint``, written atomically."""
        if checkpoint is None:
            raise RuntimeError("training finished without a checkpoint")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        with checkpoint.as_directory() as d:
            shutil.copy(Path(d) / "best.pt", tmp / WEIGHTS_FILE)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)


@functools.cache
def _interruptible_trainer_cls() -> Any:  # built on first use: no Ray import when this module loads
    from ray.train.torch import TorchTrainer as RayTorchTrainer

    class InterruptibleTorchTrainer(RayTorchTrainer):
        """Ray's TorchTrainer whose run stops at once on Ctrl-C.

        Ray Train 2.60 installs its own SIGINT handler in the driver's main thread
        (``DataParallelTrainer._register_sigint_handler``, private): it waits for the controller's
        ``abort`` without a limit, which never returns while the controller is busy (e.g. starting
        workers), swallows a second Ctrl-C and exits with status 0 on the third. Here the hook only
        keeps the controller's handle: Ctrl-C raises ``KeyboardInterrupt`` out of ``fit`` and the
        caller stops the controller (:func:`adray.runtime.stop_train_controller`).
        """

        controller: Any = None

        def _register_sigint_handler(self, controller: Any) -> None:
            self.controller = controller

    return InterruptibleTorchTrainer


@dataclasses.dataclass(frozen=True)
class InProcessResult:
    model: Any
    """The best epoch's network (eval mode)."""
    val: dict[str, float]
    """``val_*`` of the best epoch and ``best_epoch``."""
    test: dict[str, float]
    """The best weights on the test split (metric names as ``spec.evaluate`` returns them)."""
    history: list[dict[str, float]]
    train_s: float


def fit_in_process(spec: TorchSpec, cfg: Any, data_dir: Path | None = None, arrays: dict[str, Arrays] | None = None,
                   device: str = "cpu", precision: Literal["fp32", "bf16"] = "fp32") -> InProcessResult:
    """The epoch loop in this process (one worker): what benchmarks and tests train with.

    Same loop, seeds and best-epoch rule as the Ray Train workers; no Ray, no checkpoints.
    """
    import torch

    if arrays is None:
        if data_dir is None:
            raise ValueError("fit_in_process: give data_dir or arrays")
        arrays = TorchTrainer(spec).load_splits(Path(data_dir), cfg)
    meta = spec.model_meta(Path(data_dir), cfg) if data_dir is not None else {}
    torch.manual_seed(cfg.seed)
    model = spec.build_model(cfg, meta).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    t0 = time.perf_counter()
    state = run_epochs(spec, cfg, model, opt, arrays[spec.train_split], arrays[spec.val_split],
                       state=LoopState(), device=device, precision=precision)
    train_s = time.perf_counter() - t0
    model.load_state_dict(state.best_state)
    model.eval()
    with torch.no_grad():
        test = {k: float(v) for k, v in spec.evaluate(model, arrays[spec.test_split], cfg).items()}
    return InProcessResult(model, state.best or {}, test, state.history, train_s)


# ----------------------------------------------------------------------------- worker side


def _train_loop(config: dict[str, Any]) -> dict[str, Any]:  # runs in every Ray Train worker
    loop_start_unix = time.time()
    import ray
    import ray.train
    import ray.train.torch
    import torch

    spec: TorchSpec = config["spec"]
    cfg = config["cfg"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(torch_threads())
    data = ray.get(config["data_ref"])
    train, val, test = data[spec.train_split], data[spec.val_split], data[spec.test_split]

    model = spec.build_model(cfg, config["meta"]).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    state = LoopState()
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:  # resume after an interruption
        with ckpt.as_directory() as d:
            saved = torch.load(Path(d) / "state.pt", map_location=device, weights_only=True)
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optim"])
            state.best_state = torch.load(Path(d) / "best.pt", map_location="cpu", weights_only=True)
            info = json.loads((Path(d) / "info.json").read_text())
            if spec.step_state is not None and (Path(d) / "step_state.pt").is_file():
                state.step_state = spec.step_state(cfg, model)
                state.step_state.load_state_dict(torch.load(Path(d) / "step_state.pt", weights_only=False))
        state.epoch, state.best, state.history = info["epoch"] + 1, info["best"], info["history"]
    resumed_from = state.epoch

    first_batch: list[float] = []
    queue = config.get("progress_queue")

    def on_step(epoch: int, step: int, steps: int, loss: float) -> None:
        if not first_batch:
            first_batch.append(time.time())
        if queue is not None and rank == 0 and (step % 20 == 1 or step == steps):
            queue.put_nowait((epoch, step, steps, loss))

    def on_epoch(row: dict[str, float], st: LoopState) -> None:
        checkpoint = _save_checkpoint(model, opt, st) if rank == 0 else None
        ray.train.report(row, checkpoint=checkpoint)
        if checkpoint is not None:
            shutil.rmtree(checkpoint.path, ignore_errors=True)

    state = run_epochs(spec, cfg, model, opt, train, val, state=state, device=device, rank=rank, world=world,
                       allreduce=allreduce_mean(world), all_reduce_sum=allreduce_sum() if world > 1 else None,
                       precision=config["precision"],
                       on_step=on_step, on_epoch=on_epoch)
    if rank != 0:
        return {}
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    with torch.no_grad():
        test_metrics = {k: float(v) for k, v in spec.evaluate(model, test, cfg).items()}
    return {"best": state.best or {}, "test": test_metrics, "history": state.history,
            "first_batch_unix": first_batch[0] if first_batch else None, "loop_start_unix": loop_start_unix,
            "resumed_from_epoch": resumed_from}


def _save_checkpoint(model: Any, opt: Any, state: LoopState) -> Any:
    import ray.train
    import torch

    d = Path(tempfile.mkdtemp(prefix="adray-ckpt-"))
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, d / "state.pt")
    torch.save(state.best_state, d / "best.pt")
    if state.step_state is not None:
        torch.save(state.step_state.state_dict(), d / "step_state.pt")
    (d / "info.json").write_text(json.dumps({"epoch": state.epoch - 1, "best": state.best,
                                             "history": state.history}))
    return ray.train.Checkpoint.from_directory(str(d))


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
