"""Cross DQN (Liao et al.): ads allocation in a feed with RLlib's DQN, offline from simulator logs.

Importing the package is light (no RLlib, no torch): training, loading and serving import them when
called.
"""

from pathlib import Path

from adray.workload import Headline, Workload
from workloads.crossdqn import evaluate as evaluation  # importing the function would shadow the module
from workloads.crossdqn.config import CrossDQNConfig, FeedSimConfig
from workloads.crossdqn.data import import_decision_log, make_data
from workloads.crossdqn.serving import AllocationPolicy
from workloads.crossdqn.train import CrossDQNTrainer, load_model

WORKLOAD = Workload(
    name="crossdqn",
    description="Cross DQN ads allocation (SACU + MCAU + batch-level PAE loss) on RLlib DQN, offline",
    config_cls=CrossDQNConfig,
    configs_dir=Path(__file__).parent / "configs",
    trainer=CrossDQNTrainer(),
    load_model=load_model,
    evaluate=evaluation.evaluate,
    policy=AllocationPolicy,
    headline=Headline(metric="reward", baseline="random"),
    generator_fields=("sim", "n_requests", "log_pae", "log_spread"),
    make_data=make_data,
    importers={"crossdqn-log": import_decision_log},
)

__all__ = ["WORKLOAD", "CrossDQNConfig", "FeedSimConfig"]
