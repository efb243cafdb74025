"""The epoch loop: the one training loop of every Ray Train workload.

Ray Train workers (``adray.train_torch``), the in-process runs of benchmarks and tests
(``adray.train_torch.fit_in_process``) all call :func:`run_epochs`. Per epoch: a seeded permutation
of the training rows (the same on every rank; rank r takes every world-th row), Adam steps on
``spec.loss``, an optional all-reduce of gradients across workers, gradient clipping, then on
rank 0 the validation metrics and the best-epoch bookkeeping (:func:`better`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

Arrays = dict[str, np.ndarray]


@dataclasses.dataclass
class StepContext:
    """What a custom optimiser step (``TorchSpec.step``) gets besides model, optimiser and batch.

    Multi-gradient methods (per-task gradients, a validation gradient, projections) cannot be a
    loss: the step computes its gradients, writes ``.grad`` and calls ``optimizer.step()`` itself.
    The harness does not average gradients for it; the step reduces what it needs with
    ``all_reduce`` so that every rank applies the same update.
    """

    rank: int
    world: int
    epoch: int
    step: int
    all_reduce: Callable[[Any], Any]
    """SUM of a tensor over the ranks (in place, returned); identity on one worker."""
    generator: Any
    """A torch.Generator seeded by (seed, epoch, step): the same on every rank."""
    val_batch: Callable[[int], dict[str, Any]]
    """``val_batch(n)``: this rank's shard of a global batch of ``n`` rows of the validation split,
    drawn by (seed, epoch, step) alike on every rank."""
    state: Any
    """The step's own state (``TorchSpec.step_state``), saved with every checkpoint."""


@dataclasses.dataclass
class LoopState:
    """What a resumed loop needs: the next epoch, the best epoch so far and its weights."""

    epoch: int = 0
    """The next epoch to run."""
    best: dict[str, float] | None = None
    """``val_*`` metrics of the best epoch and ``best_epoch``."""
    best_state: dict[str, Any] | None = None
    """CPU copy of the best epoch's state dict."""
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    step_state: Any = None
    """The custom step's state object (``state_dict``/``load_state_dict``; None without one)."""


def better(score: float, best: float | None, mode: Literal["max", "min"]) -> bool:
    """Does an epoch scoring ``score`` replace the best so far (``best``; None: no epoch yet)?

    A NaN objective (e.g. the AUC of a one-class validation split) never wins against a finite
    one and never blocks a later finite one: the first epoch is kept provisionally whatever its
    score, and any finite score replaces a NaN best.
    """
    if best is None:
        return True
    if not math.isfinite(score):
        return False
    if not math.isfinite(best):
        return True
    return score > best if mode == "max" else score < best


def rows(arrays: Arrays) -> int:
    return len(next(iter(arrays.values()))) if arrays else 0


def run_epochs(
    spec: Any,
    cfg: Any,
    model: Any,
    opt: Any,
    train: Arrays,
    val: Arrays,
    *,
    state: LoopState,
    device: Any = "cpu",
    rank: int = 0,
    world: int = 1,
    allreduce: Callable[[list[Any]], None] | None = None,
    all_reduce_sum: Callable[[Any], Any] | None = None,
    precision: Literal["fp32", "bf16"] = "fp32",
    on_step: Callable[[int, int, int, float], None] | None = None,
    on_epoch: Callable[[dict[str, float], LoopState], None] | None = None,
) -> LoopState:
    """Train from ``state.epoch`` to ``cfg.epochs``; returns the updated state.

    Args:
        spec: a ``TorchSpec`` (``loss``, ``evaluate``, ``objective``, ``mode``; optionally ``step``
            and ``step_state``: a custom optimiser step replaces loss/backward/average/clip/step).
        allreduce: averages a list of gradients across the ``world`` workers in place (None: one).
        all_reduce_sum: SUM of one tensor across the workers (custom steps; None: one worker).
        on_step: ``(epoch, step, steps, mean loss so far)`` after every step (progress bars).
        on_epoch: ``(row, state)`` after every epoch, on every rank (checkpoint + report).
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    n = rows(train)
    per_worker = max(1, cfg.batch_size // world)
    steps = max(1, (n // world) // per_worker)
    device = torch.device(device)
    autocast = precision == "bf16"
    custom = getattr(spec, "step", None)
    if custom is not None and state.step_state is None and getattr(spec, "step_state", None) is not None:
        state.step_state = spec.step_state(cfg, model)

    def shard(arrays: Arrays, idx: np.ndarray) -> dict[str, Any]:
        return {k: torch.from_numpy(np.ascontiguousarray(v[np.sort(idx)])).to(device) for k, v in arrays.items()}

    for epoch in range(state.epoch, cfg.epochs):
        model.train()
        perm = np.random.default_rng(cfg.seed * 100_003 + epoch).permutation(n)[rank::world]
        t_epoch, loss_sum = time.perf_counter(), 0.0
        for step in range(steps):
            batch = shard(train, perm[step * per_worker:(step + 1) * per_worker])
            if custom is not None:
                def val_batch(size: int, e: int = epoch, s: int = step) -> dict[str, Any]:
                    draw = np.random.default_rng([cfg.seed, e, s, 7]).integers(0, rows(val), size)
                    return shard(val, draw[rank::world])

                ctx = StepContext(rank, world, epoch, step, all_reduce_sum or (lambda t: t),
                                  torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 10_007 + step),
                                  val_batch, state.step_state)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
                    stats = custom(model, opt, batch, cfg, ctx)
                loss_sum += float(stats.get("loss", 0.0))
            else:
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss, _ = spec.loss(model, batch, cfg)
                opt.zero_grad(set_to_none=False)
                loss.backward()
                if allreduce is not None and world > 1:
                    allreduce([p.grad for p in params])
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                loss_sum += float(loss.detach())
            if on_step is not None:
                on_step(epoch, step + 1, steps, loss_sum / (step + 1))
        epoch_time = time.perf_counter() - t_epoch
        row: dict[str, float] = {"epoch": epoch, "train_loss": loss_sum / steps, "epoch_time_s": epoch_time,
                                 "samples_per_s": steps * per_worker * world / epoch_time}
        if hasattr(state.step_state, "end_epoch"):
            state.step_state.end_epoch(row)
        if rank == 0:
            model.eval()
            with torch.no_grad():
                row |= {f"val_{k}": float(v) for k, v in spec.evaluate(model, val, cfg).items()}
            score = row.get(f"val_{spec.objective}", float("nan"))
            best_score = None if state.best is None else state.best[f"val_{spec.objective}"]
            if better(score, best_score, spec.mode):
                state.best = {k: v for k, v in row.items() if k.startswith("val_")} | {"best_epoch": epoch}
                state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            state.history.append(row)
        state.epoch = epoch + 1
        if on_epoch is not None:
            on_epoch(row, state)
    return state


def allreduce_sum() -> Callable[[Any], Any]:
    """SUM of a tensor across the torch.distributed ranks, in place (for custom steps)."""
    import torch.distributed as dist

    def reduce(t: Any) -> Any:
        dist.all_reduce(t)
        return t

    return reduce


def allreduce_mean(world: int) -> Callable[[list[Any]], None]:
    """Average gradients across ``world`` torch.distributed ranks with one coalesced all-reduce.

    By hand rather than DDP: workload losses call model methods other than ``forward`` (logits,
    auxiliary heads) and ablations leave parameters unused, both of which break DDP's
    forward-driven reducer. The cost is the same single all-reduce per step.
    """
    import torch
    import torch.distributed as dist

    def reduce(grads: list[Any]) -> None:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    return reduce
