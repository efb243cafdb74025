"""DRL-PUT (Pinterest): personalised ranking-utility tuning by policy gradient, on RLlib."""

from pathlib import Path

from adray.workload import Headline, Workload
from workloads.drlput.config import DRLPUTConfig
from workloads.drlput.data import import_decision_log, make_data
from workloads.drlput.evaluate import evaluate
from workloads.drlput.gate import gate_data
from workloads.drlput.policy import UtilityPolicy
from workloads.drlput.train import DRLPUTTrainer, load_model

WORKLOAD = Workload(
    name="drlput",
    description="DRL-PUT utility tuning (REINFORCE / actor-critic with gamma = 0) on RLlib, from logged requests",
    config_cls=DRLPUTConfig,
    configs_dir=Path(__file__).parent / "configs",
    trainer=DRLPUTTrainer(),
    load_model=load_model,
    evaluate=evaluate,
    policy=UtilityPolicy,
    headline=Headline(metric="reward", baseline="uniform", mode="max"),
    make_data=make_data,
    generator_fields=("sim", "action", "behaviour"),
    importers={"drlput-log": import_decision_log},
    gate_data=gate_data,
)
