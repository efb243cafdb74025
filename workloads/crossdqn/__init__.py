"""Cross DQN (Liao et al.): ads allocation in a feed with RLlib's DQN, offline from simulator logs."""

from pathlib import Path

from adray.workload import Workload
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import make_data
from workloads.crossdqn.evaluate import evaluate_methods
from workloads.crossdqn.train import fit, load_model

WORKLOAD = Workload(
    name="crossdqn",
    description="Cross DQN ads allocation (SACU + MCAU + batch-level PAE loss) on RLlib DQN, offline",
    config_cls=CrossDQNConfig,
    configs_dir=Path(__file__).parent / "configs",
    make_data=make_data,
    fit=fit,
    load_model=load_model,
    evaluate_methods=evaluate_methods,
)
