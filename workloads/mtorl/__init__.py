"""MTORL: multi-task offline RL for channel recommendation and budget allocation (KDD 2025)."""

from pathlib import Path

from adray.train_torch import TorchSpec, TorchTrainer
from adray.workload import Headline, Workload
from workloads.mtorl import data, evaluate, model, train
from workloads.mtorl.config import MTORLConfig
from workloads.mtorl.serving import ChannelPolicy

TRAINER = TorchTrainer(TorchSpec(
    load_split=data.load_split,
    model_meta=data.model_meta,
    build_model=model.build_model,
    loss=train.loss,
    evaluate=evaluate.evaluate,
    eval_outputs=evaluate.eval_outputs,
    eval_metrics=evaluate.eval_metrics,
    objective="f1_macro",
    mode="max",
    stream_columns=train.stream_columns,
    stream_convert=train.stream_convert,
    streams=train.streams,
))

WORKLOAD = Workload(
    name="mtorl",
    description="MTORL: causal TCN + causal attention, action/reward decoders, DPO; Algorithm 1 online",
    config_cls=MTORLConfig,
    configs_dir=Path(__file__).parent / "configs",
    trainer=TRAINER,
    load_model=TRAINER.load,
    evaluate=evaluate.evaluate_methods,
    policy=ChannelPolicy,
    headline=Headline(metric="test_f1_macro", baseline="majority"),
    generator_fields=("source", "kuairand_path", "sim", "min_len", "split_fractions", "step_features", "gain", "keep_leaky"),
    make_data=data.make_data,
    importers={"kuairand-sequence": data.import_kuairand, "criteo-sequence": data.import_criteo},
)
