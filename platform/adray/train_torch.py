"""The Ray Train harness: a :class:`TorchSpec` workload, data-parallel on 1..N workers, CPU or GPU.

:class:`TorchTrainer` is the ``Trainer`` a Ray Train workload declares. Two ways in for the rows,
chosen by :func:`adray.ingest.choose` (training rows in the manifest against
``ingest_memory_max_rows``; the ``ingest`` config field forces either):

* in memory (small data, and workloads without ``TorchSpec.stream_convert``): the driver loads the
  splits once (``TorchSpec.load_split``) and puts them in the object store; every worker takes a
  disjoint shard of each epoch's seeded permutation.
* streaming (:mod:`adray.ingest`): the training split is a Ray Data read of the dataset's files,
  split across the workers by Ray Train; each worker converts its rows to tensors
  (``TorchSpec.stream_convert``) and prefetches; rank 0 reads a bounded validation / test split
  itself. Neither the driver nor the object store holds the split.

Either way every worker runs the one epoch loop (:func:`adray.epochs.run_epochs`), averaging
gradients with one all-reduce per step.

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

from adray import ingest
from adray.data import DataError, dataset_uri, read_dataset
from adray.epochs import Batches, LoopState, allreduce_mean, allreduce_sum, rows, run_epochs
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
        stream_columns: ``(meta, cfg) -> [column]``: the stored columns ``stream_convert`` reads.
        stream_convert: ``(batch, cfg, meta, where) -> Arrays``: a batch of stored columns (numpy,
            any number of rows) -> the arrays ``load_split`` gives for those rows, in their order
            (vectorised; raises ``DataError`` naming ``where`` and the field). Without it the
            workload trains in memory only (its rows are not one stored row each, e.g. windows).
        streams: ``cfg -> bool``: whether this config's rows can stream (default: whenever
            ``stream_convert`` is set); e.g. a protocol that samples windows across the whole split
            cannot.
        stream_read: ``(data, split, cfg, meta, *, seed, shuffle, readers) -> ray.data.Dataset``:
            the streaming path's training read when its rows are not the stored rows (default:
            :func:`adray.ingest.read_split` of ``stream_columns``); e.g. VAMO's windows, made from
            whole trajectories in the read tasks before Ray Train splits the rows.
        stream_rows: ``(data, cfg, meta) -> rows``: how many rows that read gives (default: the
            split's rows in the manifest); what the steps of an epoch follow from.
        stream_eval: ``(data, split, cfg, meta, max_rows) -> Arrays``: the validation / test arrays
            on the streaming path (``max_rows``: ``ingest_eval_max_rows``), when stored rows
            cannot be converted batch by batch (default: :func:`adray.ingest.read_eval_split`).
        eval_outputs: ``(model, arrays, cfg) -> Arrays``: per-row outputs (predictions, labels) of
            any number of rows; with ``eval_metrics`` (``(outputs, cfg) -> {metric: float}``, on the
            concatenated outputs of a split: what ``evaluate`` gives on those rows) the streaming path
            evaluates the whole validation and test splits batch by batch (:class:`adray.ingest.EvalSplit`).
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
    stream_columns: Callable[[dict[str, Any], Any], list[str]] | None = None
    stream_convert: Callable[[Arrays, Any, dict[str, Any], str], Arrays] | None = None
    streams: Callable[[Any], bool] | None = None
    stream_read: Callable[..., Any] | None = None
    stream_rows: Callable[[Any, Any, dict[str, Any]], int] | None = None
    stream_eval: Callable[[Any, str, Any, dict[str, Any], int], Arrays] | None = None
    eval_outputs: Callable[[Any, Arrays, Any], Arrays] | None = None
    eval_metrics: Callable[[Arrays, Any], dict[str, float]] | None = None
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"

    @property
    def evaluates_batches(self) -> bool:
        return self.eval_outputs is not None and self.eval_metrics is not None

    def can_stream(self, cfg: Any) -> bool:
        return self.stream_convert is not None and (self.streams is None or bool(self.streams(cfg)))

    def converter(self, cfg: Any, meta: dict[str, Any], where: str) -> ingest.Convert:
        """``stream_convert`` bound to one run: stored columns -> arrays."""
        if self.stream_convert is None:
            raise ValueError("this TorchSpec has no stream_convert")
        return functools.partial(_convert, self.stream_convert, cfg=cfg, meta=meta, where=where)

    def columns(self, meta: dict[str, Any], cfg: Any) -> list[str] | None:
        return None if self.stream_columns is None else list(self.stream_columns(meta, cfg))

    def read_train(self, data: Any, cfg: Any, meta: dict[str, Any], *, shuffle: bool, readers: int = 1) -> Any:
        """The streaming path's lazy Ray Data read of the training split (``stream_read`` or its files)."""
        if self.stream_read is not None:
            return self.stream_read(data, self.train_split, cfg, meta, seed=cfg.seed, shuffle=shuffle, readers=readers)
        return ingest.read_split(data, self.train_split, self.columns(meta, cfg), seed=cfg.seed, shuffle=shuffle,
                                 readers=readers)


def _convert(fn: Callable[..., Arrays], batch: Arrays, *, cfg: Any, meta: dict[str, Any], where: str) -> Arrays:
    return fn(batch, cfg, meta, where)


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

        from adray.runtime import placed_worker_cpus, stop_train_controller, worker_cpus

        spec, timings = self.spec, {}
        t1 = time.perf_counter()
        opts = ingest.IngestOptions.of(cfg)
        train_rows = ingest.split_rows(ctx.data_dir, spec.train_split)
        path, why = ingest.choose(opts, train_rows, spec.can_stream(cfg))
        if path == "stream" and ctx.cpus_per_worker is not None:  # e.g. inside a Tune trial: CPUs fixed
            room = ray.available_resources().get("CPU", 0.0) - ctx.cpus_per_worker * ctx.num_workers
            if room < ingest.DATA_RESERVE_CPUS:
                msg = (f"{room:g} CPU would be left beside the Train workers for Ray Data's read tasks; streaming "
                       f"needs {ingest.DATA_RESERVE_CPUS:g} (fewer workers or a bigger cluster)")
                if opts.mode == "stream":
                    raise ValueError(f"ingest=stream: {msg}")
                path, why = "memory", f"{why}, but {msg}"
        meta = spec.model_meta(ctx.data_dir, cfg)
        spec.build_model(cfg, meta)  # fail fast on a config/meta mismatch, before any actor starts
        # the opened dataset travels to the workers: its storage carries the resolved filesystem and
        # credentials, so rank 0 on another node reads validation/test without the driver's environment
        data = read_dataset(ctx.data_dir, check_files=False) if path == "stream" else dataset_uri(ctx.data_dir)
        loop_config: dict[str, Any] = {"spec": spec, "cfg": cfg, "meta": meta, "precision": ctx.precision,
                                       "ingest": opts, "data": data}
        datasets: dict[str, Any] | None = None
        if path == "memory":
            loop_config["data_ref"] = ray.put(self.load_splits(ctx.data_dir, cfg))
        else:
            loop_config["train_rows"] = train_rows if spec.stream_rows is None else spec.stream_rows(data, cfg, meta)
            datasets = {"train": spec.read_train(data, cfg, meta, shuffle=opts.shuffle, readers=ingest.readers_for(ctx.num_workers, opts.readers))}
        timings["data_load_s"] = time.perf_counter() - t1
        timings["ingest_stream"] = float(path == "stream")
        if ctx.progress:
            print(f"[adray] ingest: {path} ({why})", file=sys.stderr, flush=True)

        run = ctx.storage.child(ctx.run_name)
        if run.is_file(COMPLETED):
            run.delete_dir()  # the same command again after success: train afresh
        reserve = ingest.DATA_RESERVE_CPUS if datasets else 0.0  # room for the read tasks
        cpus = ctx.cpus_per_worker if ctx.cpus_per_worker is not None else worker_cpus(ctx.num_workers, reserve)
        cpus = placed_worker_cpus(cpus, ctx.num_workers, ctx.placement, reserve)
        resources = {"CPU": cpus} | ({"GPU": 1.0} if ctx.use_gpu else {})
        reporter = _Progress(ctx.progress, cfg.epochs)
        storage_path, storage_fs = ctx.storage.ray_storage()
        trainer = _interruptible_trainer_cls()(
            _train_loop,
            train_loop_config=loop_config | {"progress_queue": reporter.queue},
            scaling_config=ScalingConfig(num_workers=ctx.num_workers, use_gpu=ctx.use_gpu,
                                         resources_per_worker=resources,
                                         placement_strategy=ctx.placement.upper()),
            datasets=datasets, dataset_config=ingest.data_config(opts.shuffle, ctx.num_workers) if datasets else None,
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
        except Exception as exc:  # a bad file mid-epoch: the worker's DataError, not Ray Train's wrapper
            user = _user_error(exc)
            if user is exc:
                raise
            raise user from None
        except KeyboardInterrupt:
            if trainer.controller is not None:
                stop_train_controller(trainer.controller)
            print(f"\n[adray] interrupted: Ray Train run {ctx.run_name} stopped (controller and workers); its last "
                  f"checkpoint (if any) is kept under {run.display()}, and the same command resumes from it",
                  file=sys.stderr, flush=True)
            raise
        timings["trainer_fit_s"] = time.perf_counter() - t2
        if result.error is not None:
            raise _user_error(result.error)
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
            if all("steady_samples_per_s" in h for h in history):
                metrics["steady_samples_per_s"] = float(np.mean([h["steady_samples_per_s"] for h in history]))
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


def fit_in_process(spec: TorchSpec, cfg: Any, data_dir: Path | str | None = None,
                   arrays: dict[str, Arrays] | None = None, device: str = "cpu",
                   precision: Literal["fp32", "bf16"] = "fp32",
                   ingest_path: Literal["memory", "stream"] = "memory") -> InProcessResult:
    """The epoch loop in this process (one worker): what benchmarks and tests train with.

    Same loop, seeds and best-epoch rule as the Ray Train workers; no Ray Train, no checkpoints.
    ``ingest_path="stream"``: the training split read with Ray Data as the workers read it (needs a
    running Ray and ``data_dir``); validation and test as rank 0 reads them on that path.
    It trains at the caller's torch thread count (the workers: ``runtime.torch_threads()``): a seed
    gives bit-identical weights at one thread count, not across counts (float summation order).
    """
    import torch

    if data_dir is None and arrays is None:
        raise ValueError("fit_in_process: give data_dir or arrays")
    meta = spec.model_meta(Path(data_dir), cfg) if data_dir is not None else {}
    train: Arrays | Batches
    if ingest_path == "stream":
        if data_dir is None:
            raise ValueError("fit_in_process: the streaming path reads data_dir")
        arrays, train = _stream_inputs(spec, cfg, meta, dataset_uri(data_dir), rank=0, world=1, device=device)
    else:
        if arrays is None:
            arrays = TorchTrainer(spec).load_splits(Path(data_dir), cfg)  # type: ignore[arg-type]
        train = arrays[spec.train_split]
    torch.manual_seed(cfg.seed)
    model = spec.build_model(cfg, meta).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    t0 = time.perf_counter()
    state = run_epochs(spec, cfg, model, opt, train, arrays[spec.val_split],
                       state=LoopState(), device=device, precision=precision)
    train_s = time.perf_counter() - t0
    model.load_state_dict(state.best_state)
    model.eval()
    with torch.no_grad():
        test = {k: float(v) for k, v in ingest.evaluate(spec, model, arrays[spec.test_split], cfg).items()}
    return InProcessResult(model, state.best or {}, test, state.history, train_s)


def _stream_inputs(spec: TorchSpec, cfg: Any, meta: dict[str, Any], data: str, *, rank: int, world: int,
                   device: Any, shard: Any = None, train_rows: int | None = None,
                   ) -> tuple[dict[str, Arrays], Batches]:
    """The streaming path's inputs of one rank: its training batches and (rank 0) the bounded
    validation and test splits. ``shard``: the rank's Ray Train dataset shard; None: this process
    reads the whole training split itself (``fit_in_process``)."""
    opts = ingest.IngestOptions.of(cfg)
    columns = spec.columns(meta, cfg)
    if shard is None:
        shard = spec.read_train(data, cfg, meta, shuffle=opts.shuffle)
        shard.context.execution_options = ingest.execution_options(opts.shuffle, 1)
        shard = shard.iterator()
    if train_rows is not None:
        n = train_rows
    else:
        n = ingest.split_rows(data, spec.train_split) if spec.stream_rows is None else spec.stream_rows(data, cfg, meta)

    def on_error(exc: BaseException) -> BaseException:
        return ingest.locate_bad_file(data, spec.train_split, columns, exc)

    batches = ingest.StreamBatches(shard, spec.converter(cfg, meta, f"{ingest.where(data)} split {spec.train_split!r}"),
                                   rows=n, batch_size=cfg.batch_size, seed=cfg.seed, rank=rank, world=world,
                                   opts=opts, device=device, on_error=on_error)
    splits: dict[str, Arrays | ingest.EvalSplit] = {spec.val_split: {}, spec.test_split: {}}
    if rank == 0:
        for split in (spec.val_split, spec.test_split):
            if spec.stream_eval is not None:
                splits[split] = spec.stream_eval(data, split, cfg, meta, opts.eval_max_rows)
                continue
            convert = spec.converter(cfg, meta, f"{ingest.where(data)} split {split!r}")
            splits[split] = (ingest.EvalSplit(data, split, columns, convert, opts.eval_max_rows)
                             if spec.evaluates_batches else
                             ingest.read_eval_split(data, split, columns, convert, opts.eval_max_rows))
    elif spec.step is not None:  # a custom step draws validation batches on every rank (StepContext.val_batch)
        split = spec.val_split
        splits[split] = (spec.stream_eval(data, split, cfg, meta, opts.eval_max_rows) if spec.stream_eval is not None
                         else ingest.read_eval_split(data, split, columns, spec.converter(
                             cfg, meta, f"{ingest.where(data)} split {split!r}"), opts.eval_max_rows))
    return splits, batches


def _user_error(error: BaseException) -> BaseException:
    """A worker's DataError (a bad file mid-epoch) as itself, not inside Ray Train's wrapper.

    Ray Train 2.60 keeps each rank's exception in ``WorkerGroupError.worker_failures`` wrapped in
    ``UserExceptionWithTraceback`` (its original in the private ``_base_exc``)."""
    for failure in getattr(error, "worker_failures", {}).values():
        todo: list[BaseException | None] = [failure]
        while todo:
            exc = todo.pop()
            if exc is None:
                continue
            if isinstance(exc, DataError):
                return DataError(str(exc))
            todo += [getattr(exc, "_base_exc", None), exc.__cause__]
    return error


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
    train: Arrays | Batches
    if "data_ref" in config:
        data = ray.get(config["data_ref"])
        train, val, test = data[spec.train_split], data[spec.val_split], data[spec.test_split]
    else:
        splits, train = _stream_inputs(spec, cfg, config["meta"], config["data"], rank=rank, world=world,
                                       device=device, shard=ray.train.get_dataset_shard(spec.train_split),
                                       train_rows=config["train_rows"])
        val, test = splits[spec.val_split], splits[spec.test_split]

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
        test_metrics = {k: float(v) for k, v in ingest.evaluate(spec, model, test, cfg).items()}
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
