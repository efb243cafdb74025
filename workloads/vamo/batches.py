"""Training samples: windows of ``context`` steps (plus ``history`` earlier states) of a trajectory,
drawn with task proportions matched to the data (Algorithm 1, line 5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are made: the streaming read tasks build numpy windows
    import torch

BATCH_KEYS = ("ext", "ext_valid", "prev_action", "rtg", "step", "task", "target", "valid")


class Sampler:
    """Positions (trajectory m, step t) of a split, grouped by task; ``tasks`` restricts them (STL)."""

    def __init__(self, arrays: dict[str, np.ndarray], n_tasks: int, tasks: tuple[int, ...] | None = None,
                 shares: np.ndarray | None = None) -> None:
        self.arrays = arrays
        steps = arrays["valid"].shape[1]
        flat = arrays["valid"].ravel()
        task_of = np.repeat(arrays["task"], steps)
        keep = range(n_tasks) if tasks is None else tasks
        self.positions = {k: np.flatnonzero(flat & (task_of == k)) for k in keep}
        self.positions = {k: v for k, v in self.positions.items() if len(v)}
        counts = np.array([len(self.positions.get(k, ())) for k in range(n_tasks)], float)
        self.shares = counts / counts.sum() if shares is None else np.asarray(shares, float)
        self.steps = steps

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n positions: round(n x share_k) of task k (largest remainders), uniform within the task."""
        tasks = sorted(self.positions)
        share = self.shares[tasks] / self.shares[tasks].sum()
        raw = n * share
        per = np.floor(raw).astype(int)
        per[np.argsort(per - raw)[: n - per.sum()]] += 1
        flat = np.concatenate([rng.choice(self.positions[k], size=c) for k, c in zip(tasks, per)])
        return np.divmod(flat, self.steps)

    def all_positions(self) -> tuple[np.ndarray, np.ndarray]:
        return np.divmod(np.sort(np.concatenate(list(self.positions.values()))), self.steps)


def rtg_unit(arrays: dict[str, np.ndarray], norm: str) -> np.ndarray:
    """(M,) what each trajectory's return-to-go is counted in (config ``rtg_norm``): 1, or its
    capacity budget / CPA constraint."""
    if norm == "capacity":
        return np.asarray(arrays["budget"], np.float64) / np.asarray(arrays["cpa"], np.float64)
    return np.ones(len(arrays["task"]))


def make_batch(arrays: dict[str, np.ndarray], m: np.ndarray, t: np.ndarray, context: int, history: int,
               rtg_scale: float, norm: str = "none") -> dict[str, torch.Tensor]:
    """Tensors of the windows ending at (m, t) (see VamoNet.forward); ``target`` and ``valid`` (B, L)."""
    import torch

    return {k: torch.from_numpy(v)
            for k, v in window_arrays(arrays, m, t, context, history, rtg_scale, norm).items()}


def window_arrays(arrays: dict[str, np.ndarray], m: np.ndarray, t: np.ndarray, context: int, history: int,
                  rtg_scale: float, norm: str = "none") -> dict[str, np.ndarray]:
    """:func:`make_batch` as NumPy arrays."""
    length, h = context, history
    steps = t[:, None] + np.arange(-(length + h - 1), 1)[None, :]  # (B, L+H)
    ok = steps >= 0
    sc = np.maximum(steps, 0)
    mm = m[:, None]
    ext = arrays["states"][mm, sc] * ok[..., None]
    pos, valid = sc[:, h:], ok[:, h:]
    prev_ok = steps[:, h:] >= 1
    prev = arrays["action"][mm, np.maximum(steps[:, h:] - 1, 0)] * prev_ok
    return {
        "ext": np.ascontiguousarray(ext, np.float32),
        "ext_valid": ok,
        "prev_action": prev.astype(np.float32),
        "rtg": (arrays["rtg"][mm, pos] * valid / (rtg_scale * rtg_unit(arrays, norm)[mm])).astype(np.float32),
        "step": pos.astype(np.int64),
        "task": arrays["task"][m].astype(np.int64),
        "target": (arrays["action"][mm, pos] * valid).astype(np.float32),
        "valid": valid,
    }


def split_batch(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    """The batch cut into ``parts`` contiguous shards (what data-parallel workers would get)."""
    n = len(batch["task"])
    edges = np.linspace(0, n, parts + 1).astype(int)
    return [{k: v[a:b] for k, v in batch.items()} for a, b in zip(edges[:-1], edges[1:])]
