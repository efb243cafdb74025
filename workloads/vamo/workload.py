"""The VAMO workload as the platform sees it (``workloads.vamo.WORKLOAD``) and its trainer entry."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from adray.train_torch import TorchTrainer
from adray.workload import Headline, TrainContext, TrainResult, Workload
from workloads.vamo.config import TASKS, VamoConfig
from workloads.vamo.data import make_data
from workloads.vamo.evaluate import evaluate_methods
from workloads.vamo.importer import import_auctionnet
from workloads.vamo.policy import BidPolicy
from workloads.vamo.train import META_FILE, MODEL_FILE, TARGETS_META, load_model, make_spec, task_runs

RESULT_FILE = "result.json"
DONE_FILE = "ALL_TASKS_DONE"


@dataclasses.dataclass(frozen=True)
class VamoTrainer:
    """Every method on the platform's Ray Train harness (``adray.train_torch.TorchTrainer`` with
    the custom step of step.py), on ``ctx.num_workers`` workers.

    Data parallelism: each worker takes its rows of the global batch and of the global validation
    batch; the step all-reduces (SUM) the per-task gradients of the loss SUMS, the loss sums and the
    counts, and the gradient of the validation loss sum with its count, in one collective, then
    divides by the global counts: every worker computes the task weights of one process on the
    global batch and applies the same update (step.py).

    STL: one harness run per task (run ``<run_name>-<task>``, task-filtered splits), combined into
    one model directory; a rerun after an interruption keeps the tasks that had finished.

    Selection reads logged data only (issue 19): the best epoch is the lowest ``val_loss``, the
    action error on the validation day's *logged* trajectories (the dataset's ``val`` split, D_val
    of Algorithm 1), and VAMO's validation gradient and task weights read windows of that same
    split (step.py). Nothing in training or selection calls the auction simulator (sim.py,
    world.py): it generates the trajectories (``adray data make vamo``) and bids the evaluation
    days (evaluate.py), so a dataset imported from AuctionNet files trains and is selected alike.
    Issue 22 allows a held-out *simulated* validation day bid online as the selection signal (the
    paper validates on a held-out day); the platform's rule wins by default. ``target_grid`` is that
    explicit switch, off by default: after training, the trained model bids the validation day (the
    day of the ``val`` split, never an evaluation day) at each multiple of the grid, each task's
    return target is chosen by its own metric and published in the model's meta, and the run
    reports ``val_day_score`` / ``val_day_<task>`` (evaluate.select_targets). The epochs and the best
    epoch are still chosen on the logged ``val_loss``.
    """

    loop_field: str = "epochs"
    objective: str = "loss"
    mode: Literal["max", "min"] = "min"

    def train(self, cfg: VamoConfig, ctx: TrainContext) -> TrainResult:
        runs = task_runs(cfg)
        if len(runs) == 1:
            results = [TorchTrainer(make_spec()).train(cfg, ctx)]
        else:
            results = self._per_task(cfg, ctx, runs)
        return _choose_targets(cfg, ctx, _package(results, ctx))

    @staticmethod
    def _per_task(cfg: VamoConfig, ctx: TrainContext, runs: list[Any]) -> list[TrainResult]:
        done = ctx.run_dir / DONE_FILE
        fresh = done.is_file()  # the same command after a finished run trains afresh (as the harness)
        done.unlink(missing_ok=True)
        out = []
        for tasks in runs:
            name = TASKS[tasks[0]]
            sub = dataclasses.replace(ctx, run_name=f"{ctx.run_name}-{name}", run_dir=ctx.run_dir / name)
            saved = sub.run_dir / RESULT_FILE
            if saved.is_file() and not fresh and (sub.run_dir / "model" / "model.pt").is_file():
                r = json.loads(saved.read_text())  # finished before an interruption
                out.append(TrainResult(r["metrics"], sub.run_dir / "model", r["meta"], r["history"], r["timings"]))
                continue
            saved.unlink(missing_ok=True)
            res = TorchTrainer(make_spec(tasks)).train(cfg, sub)
            saved.write_text(json.dumps({"metrics": res.metrics, "meta": res.meta, "history": res.history,
                                         "timings": res.timings}, default=float))
            out.append(res)
        done.write_text("")
        return out

    def salvage(self, cfg: VamoConfig, ctx: TrainContext, checkpoint: str | None) -> TrainResult | None:
        """The best weights of a stopped multi-task trial (ASHA); STL keeps no single checkpoint."""
        if len(task_runs(cfg)) > 1:
            return None
        res = TorchTrainer(make_spec()).salvage(cfg, ctx, checkpoint)
        return None if res is None else _choose_targets(cfg, ctx, _package([res], ctx))


def _package(results: list[TrainResult], ctx: TrainContext) -> TrainResult:
    """The harness's model directories (``model.pt``: one, or one per STL task) as the one model
    directory ``load_model`` reads (``models.pt``: the list of state dicts, and the network's meta)."""
    states = [torch.load(r.model_dir / "model.pt", map_location="cpu", weights_only=True) for r in results]
    model_dir = ctx.run_dir / "model"  # for a multi-task method, the harness's own: replaced
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True)
    torch.save(states, model_dir / MODEL_FILE)
    meta = results[0].meta
    (model_dir / META_FILE).write_text(json.dumps(meta))
    if len(results) == 1:
        return dataclasses.replace(results[0], model_dir=model_dir)
    return TrainResult(_combine([r.metrics for r in results]), model_dir, meta,
                       [{"task": k, **h} for k, r in enumerate(results) for h in r.history],
                       {k: float(sum(r.timings.get(k, 0.0) for r in results)) for k in results[0].timings})


def _choose_targets(cfg: VamoConfig, ctx: TrainContext, result: TrainResult) -> TrainResult:
    """``cfg.target_grid`` (issue 22; nothing when empty): the trained model's per-task return targets
    chosen on the held-out validation day (evaluate.select_targets), written into the model's meta
    (``TARGETS_META``, which load_model applies) and its ``val_day_*`` metrics added to the run's."""
    if not cfg.target_grid:
        return result
    from workloads.vamo.evaluate import select_targets

    t0 = time.perf_counter()
    # The bids run in this process, not as 1-CPU Ray tasks: in a Tune trial the cluster's CPUs are the
    # other trials' (a trial that had finished training waited, idle, for one until the other finished).
    picked = select_targets(cfg, ctx.data_dir, load_model(result.model_dir, cfg), cfg.target_grid, parallel=False)
    meta = {**result.meta, TARGETS_META: picked}
    (result.model_dir / META_FILE).write_text(json.dumps(meta))
    seconds = time.perf_counter() - t0
    if ctx.progress:
        print(f"[adray] vamo: task targets {picked['task_targets']} chosen on validation day "
              f"{picked['validation_day']}: score {picked['val_day']['score']:.2f} ({seconds:.0f} s)", flush=True)
    metrics = {**result.metrics, **{f"val_day_{k}": float(v) for k, v in picked["val_day"].items()}}
    return dataclasses.replace(result, meta=meta, metrics=metrics,
                               timings={**result.timings, "target_select_s": seconds})


def _combine(per_task: list[dict[str, float]]) -> dict[str, float]:
    """STL metrics: each task's own ``*_loss_<task>`` from its run; ``val_loss`` / ``test_loss`` the
    mean over tasks of their runs' losses; throughput the mean."""
    out: dict[str, float] = {}
    for k, m in enumerate(per_task):
        for split in ("val", "test"):
            key = f"{split}_loss_{TASKS[k]}"
            if key in m:
                out[key] = float(m[key])
    for split in ("val", "test"):
        vals = [m[f"{split}_loss"] for m in per_task if f"{split}_loss" in m]
        if vals:
            out[f"{split}_loss"] = float(np.mean(vals))
    for key in ("samples_per_s", "epoch_time_s"):
        vals = [m[key] for m in per_task if key in m]
        if vals:
            out[key] = float(np.mean(vals))
    return out


WORKLOAD = Workload(
    name="vamo",
    description="VAMO multi-task generative auto-bidding (DT + TimesNet, validation-aligned weights)",
    config_cls=VamoConfig,
    configs_dir=Path(__file__).parent / "configs",
    trainer=VamoTrainer(),
    load_model=load_model,
    evaluate=evaluate_methods,
    policy=BidPolicy,
    headline=Headline(metric="score", baseline="random"),
    make_data=make_data,
    generator_fields=("sim", "train_days", "explore"),
    importers={"auctionnet-trajectory": import_auctionnet},
)
