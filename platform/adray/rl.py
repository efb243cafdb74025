"""RLlib harness: offline transitions from Parquet, algorithm build/train/save/restore helpers.

Generic (no workload names): an RLlib workload's ``fit`` builds its ``AlgorithmConfig``, passes it
through :func:`small_machine`, builds it, and drives it with :func:`train_iterations`; its offline
``training_step`` draws minibatches from a :class:`TransitionSampler` and hands them to the
learner group as a :class:`MultiAgentBatch` (:func:`learner_batch`). The inference RLModule is
exported with :func:`export_module` and loaded alone (no Algorithm, no cluster) with
:func:`load_module` -- that is what Serve loads.

Why not RLlib's ``OfflineData`` (Ray Data): on a 2-CPU machine shared with other jobs its
streaming ``map_batches`` pipeline needs hand-pinned resources, costs seconds per iteration to
start, and hangs when the cluster is busy; the logged datasets here fit in memory (millions of
transitions of ~100 floats), so minibatches are sampled from numpy arrays in the driver. The
Algorithm, RLModule and Learner stay real RLlib classes; only the data path is ours.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from adray.data import DataError


def read_transitions(path: Path | str, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns of a Parquet file as numpy; list columns (e.g. ``obs``) become 2-D arrays.

    Raises:
        DataError: missing file/columns, or list rows of unequal length.
    """
    path = Path(path)
    try:
        table = pq.read_table(path, columns=list(columns))
    except (OSError, pa.ArrowInvalid, KeyError) as exc:
        raise DataError(f"{path}: cannot read columns {list(columns)} ({exc})") from None
    out: dict[str, np.ndarray] = {}
    for name in columns:
        col = table.column(name).combine_chunks()
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
            lengths = col.value_lengths().to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths != lengths[0]).any():
                raise DataError(f"{path}: column {name!r} has rows of unequal length; expected fixed size")
            width = int(lengths[0]) if len(lengths) else 0
            out[name] = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), width)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


class TransitionSampler:
    """Uniform minibatches (with replacement) from in-memory transition columns."""

    def __init__(self, columns: dict[str, np.ndarray], seed: int = 0) -> None:
        sizes = {k: len(v) for k, v in columns.items()}
        if len(set(sizes.values())) != 1 or not next(iter(sizes.values()), 0):
            raise DataError(f"transitions: columns must be non-empty and of equal length, got {sizes}")
        self.columns = columns
        self.size = next(iter(sizes.values()))
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> dict[str, np.ndarray]:
        idx = self.rng.integers(0, self.size, size=n)
        return {k: v[idx] for k, v in self.columns.items()}


def split_updates(n_updates: int, minibatch_size: int, target_update_freq: int) -> list[int]:
    """Minibatches per ``learner_group.update`` call for one iteration of ``n_updates`` minibatches.

    One call takes many minibatches (RLlib splits its batch by ``minibatch_size``), which saves the
    per-call work (batch conversion, metrics reduce); a DQN learner checks its target-network sync
    once per call, so each call covers at most ``target_update_freq`` transitions and syncs still
    happen by count. E.g. (20, 128, 2000) -> [15, 5].
    """
    per_call = max(1, min(n_updates, target_update_freq // minibatch_size))
    return [per_call] * (n_updates // per_call) + ([n_updates % per_call] if n_updates % per_call else [])


def learner_batch(columns: dict[str, np.ndarray], module_id: str | None = None) -> Any:
    """A numpy minibatch as the ``MultiAgentBatch`` that ``LearnerGroup.update(batch=...)`` takes."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    n = len(next(iter(columns.values())))
    return MultiAgentBatch({module_id or DEFAULT_MODULE_ID: SampleBatch(columns)}, env_steps=n)


def small_machine(config: Any, offline: bool = True) -> Any:
    """Pin an AlgorithmConfig for a small or shared machine: everything in the driver process.

    No remote EnvRunners or Learners (the local ones run in the driver), and for offline training
    no minimum of sampled timesteps per iteration (one ``training_step`` per ``train()``).
    """
    config = config.env_runners(num_env_runners=0).learners(num_learners=0)
    if offline:
        config = config.reporting(min_sample_timesteps_per_iteration=0, min_time_s_per_iteration=0)
    return config


def train_iterations(
    algo: Any,
    iterations: int,
    summarize: Callable[[dict[str, Any]], dict[str, float]],
    report: Callable[[dict[str, float]], None] = lambda m: None,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Call ``algo.train()`` ``iterations`` times; report ``summarize(result)`` + ``iter_time_s``."""
    history = []
    for i in range(iterations):
        start = time.perf_counter()
        result = algo.train()
        metrics = {"iteration": float(i + 1), "iter_time_s": time.perf_counter() - start,
                   **summarize(result)}
        history.append(metrics)
        report(metrics)
        if progress:
            print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True)
    return history


def learner_metrics(result: dict[str, Any], module_id: str | None = None) -> dict[str, float]:
    """Scalar learner metrics of one module from an ``Algorithm.train()`` result."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import LEARNER_RESULTS

    stats = result.get(LEARNER_RESULTS, {}).get(module_id or DEFAULT_MODULE_ID, {})
    out = {}
    for k, v in stats.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def export_module(algo: Any, out_dir: Path | str, module_id: str | None = None) -> Path:
    """Write the learner's RLModule (inference part only) as an RLlib module checkpoint."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    mid = module_id or DEFAULT_MODULE_ID
    state = algo.learner_group.get_state(components=f"learner/rl_module/{mid}")
    weights = state["learner"]["rl_module"][mid]
    spaces = algo.env_runner_group.get_spaces()
    spec = algo.config.get_rl_module_spec(spaces={mid: spaces[mid]}, inference_only=True)
    module = spec.build()
    module.set_state(weights)
    out = Path(out_dir)
    module.save_to_path(out)
    return out


def load_module(path: Path | str) -> Any:
    """The RLModule of an :func:`export_module` checkpoint, alone (no Algorithm, no Ray)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not an RLModule checkpoint directory")
    module = RLModule.from_checkpoint(path)
    module.eval()
    return module


def save_algorithm(algo: Any, path: Path | str) -> Path:
    """Full Algorithm checkpoint (learner, optimiser, target nets) for resuming training."""
    return Path(algo.save_to_path(Path(path).absolute()))


def restore_algorithm(path: Path | str) -> Any:
    from ray.rllib.algorithms.algorithm import Algorithm

    return Algorithm.from_checkpoint(Path(path).absolute())
