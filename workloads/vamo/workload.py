"""The VAMO workload as the platform sees it (``workloads.vamo.WORKLOAD``) and its trainer entry."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from adray.workload import Headline, TrainContext, TrainResult, Workload
from workloads.vamo.config import VamoConfig
from workloads.vamo.data import make_data
from workloads.vamo.evaluate import evaluate_methods
from workloads.vamo.importer import import_auctionnet
from workloads.vamo.policy import BidPolicy
from workloads.vamo.train import (
    build_model,
    evaluate_windows,
    fit,
    load_model,
    load_windows,
    mean_task_loss,
    save_model,
    spec_meta,
)


@dataclasses.dataclass(frozen=True)
class VamoTrainer:
    """Trains in the calling process until the Torch harness offers the custom-step hook VAMO's
    update needs (train.py); ``--workers`` is not used yet."""

    loop_field: str = "epochs"
    objective: str = "loss"
    mode: Literal["max", "min"] = "min"

    def train(self, cfg: VamoConfig, ctx: TrainContext) -> TrainResult:
        model, history = fit(cfg, ctx.data_dir, report=ctx.reporter.report)
        model_dir = ctx.run_dir / "model"
        save_model(model, model_dir)
        rows = [h for h in history if "val_loss" in h]
        groups: dict[int, list[dict[str, float]]] = {}
        for h in rows:  # STL: one group per task's model
            groups.setdefault(int(h.get("task", -1)), []).append(h)
        bests = [min(g, key=lambda h: h["val_loss"]) for g in groups.values()]
        metrics = {"val_loss": float(sum(b["val_loss"] for b in bests) / len(bests))}
        for b in bests:
            metrics.update({k: float(v) for k, v in b.items() if k.startswith("val_loss_")})
        metrics["samples_per_s"] = float(sum(h["samples_per_s"] for h in rows) / len(rows))
        return TrainResult(metrics, model_dir, model.meta, history)

    def salvage(self, cfg: Any, ctx: TrainContext, checkpoint: str | None) -> TrainResult | None:
        return None


def vanilla_spec() -> Any:
    """The Vanilla method (Eq. 3) as a plain TorchSpec: what runs on ``adray.train_torch`` today
    (1..N Ray Train workers). VAMO's own step needs the harness hook described in train.py."""
    from adray.train_torch import TorchSpec

    return TorchSpec(load_split=load_windows, model_meta=spec_meta, build_model=build_model,
                     loss=mean_task_loss, evaluate=evaluate_windows, objective="loss", mode="min")


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
