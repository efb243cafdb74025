"""MTORL: multi-task offline RL for channel recommendation and budget allocation (KDD 2025)."""

from pathlib import Path

from adray.workload import TorchSpec, Workload
from workloads.mtorl import data, evaluate, model, train
from workloads.mtorl.config import MTORLConfig

WORKLOAD = Workload(
    name="mtorl",
    description="MTORL: causal TCN + causal attention, action/reward decoders, DPO; Algorithm 1 online",
    config_cls=MTORLConfig,
    configs_dir=Path(__file__).parent / "configs",
    make_data=data.make_data,
    importers={"kuairand-sequence": data.import_kuairand, "criteo-sequence": data.import_criteo},
    torch=TorchSpec(
        load_split=data.load_split,
        model_meta=data.model_meta,
        build_model=model.build_model,
        loss=train.loss,
        evaluate=evaluate.evaluate,
        objective="f1_macro",
        mode="max",
    ),
    evaluate_methods=evaluate.evaluate_methods,
)
