"""The epoch loop: the one training loop of every Ray Train workload.

Ray Train workers (``adray.train_torch``), the in-process runs of benchmarks and tests
(``adray.train_torch.fit_in_process``) all call :func:`run_epochs`. Per epoch: the rank's batches
(a :class:`Batches`: :class:`MemoryBatches` over arrays in memory, or a stream read with Ray Data,
``adray.ingest.StreamBatches``), Adam steps on ``spec.loss``, an optional all-reduce of gradients
across workers, gradient clipping, then on rank 0 the validation metrics and the best-epoch
bookkeeping (:func:`better`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol

import numpy as np

from adray import ingest

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


class Batches(Protocol):
    """One rank's training batches, epoch by epoch: what :func:`run_epochs` iterates."""

    steps: int
    """Steps per epoch, the same on every rank (gradients are all-reduced every step)."""
    rows_per_step: int
    """Rows of one global step over all ranks (for samples/s)."""

    def epoch(self, epoch: int) -> Iterable[dict[str, Any]]:
        """This rank's ``steps`` batches of ``epoch`` (dicts of tensors on the device)."""
        ...


class MemoryBatches:
    """Batches of arrays held in this process. Per epoch a seeded permutation of the rows, the same on
    every rank (rank r takes every world-th row); ``shuffle=False``: the rows in order every epoch
    (rank r takes every world-th row of the order, then consecutive batches of those)."""

    def __init__(self, arrays: Arrays, batch_size: int, seed: int, *, rank: int = 0, world: int = 1,
                 device: Any = "cpu", shuffle: bool = True) -> None:
        self.arrays, self.seed, self.rank, self.world = arrays, seed, rank, world
        self.device, self.shuffle = device, shuffle
        self.per_worker = max(1, batch_size // world)
        self.steps = max(1, (rows(arrays) // world) // self.per_worker)
        self.rows_per_step = self.per_worker * world

    def take(self, idx: np.ndarray) -> dict[str, Any]:
        import torch

        return {k: torch.from_numpy(np.ascontiguousarray(v[np.sort(idx)])).to(self.device)
                for k, v in self.arrays.items()}

    def epoch(self, epoch: int) -> Iterable[dict[str, Any]]:
        n = rows(self.arrays)
        order = (np.random.default_rng(self.seed * 100_003 + epoch).permutation(n) if self.shuffle
                 else np.arange(n))[self.rank::self.world]
        for step in range(self.steps):
            yield self.take(order[step * self.per_worker:(step + 1) * self.per_worker])


def run_epochs(
    spec: Any,
    cfg: Any,
    model: Any,
    opt: Any,
    train: Arrays | Batches,
    val: Arrays | ingest.EvalSplit,
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
        train: this rank's batches (:class:`Batches`), or arrays: :class:`MemoryBatches` of them
            (seeded permutation per epoch).
        val: the validation split in memory (rank 0 evaluates it; custom steps draw from it), or
            read batch by batch at each evaluation (``ingest.EvalSplit``, the streaming path).
        spec: a ``TorchSpec`` (``loss``, ``evaluate``, ``objective``, ``mode``; optionally ``step``
            and ``step_state``: a custom optimiser step replaces loss/backward/average/clip/step).
        allreduce: averages a list of gradients across the ``world`` workers in place (None: one).
        all_reduce_sum: SUM of one tensor across the workers (custom steps; None: one worker).
        on_step: ``(epoch, step, steps, mean loss so far)`` after every step (progress bars).
        on_epoch: ``(row, state)`` after every epoch, on every rank (checkpoint + report).
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    device = torch.device(device)
    batches = (MemoryBatches(train, cfg.batch_size, cfg.seed, rank=rank, world=world, device=device,
                             shuffle=getattr(cfg, "ingest_shuffle", True))
               if isinstance(train, dict) else train)
    cap = int(getattr(cfg, "max_steps_per_epoch", 0) or 0)
    steps = min(batches.steps, cap) if cap > 0 else batches.steps
    autocast = precision == "bf16"
    custom = getattr(spec, "step", None)
    if custom is not None and state.step_state is None and getattr(spec, "step_state", None) is not None:
        state.step_state = spec.step_state(cfg, model)

    if custom is not None and not isinstance(val, dict):
        raise ValueError("a custom step draws validation batches: it needs the validation split as arrays, "
                         "not evaluated batch by batch (TorchSpec.eval_outputs)")
    val_rows = MemoryBatches(val, 1, cfg.seed, device=device) if isinstance(val, dict) else None

    for epoch in range(state.epoch, cfg.epochs):
        model.train()
        t_epoch, loss_sum, done, t_first = time.perf_counter(), 0.0, 0, 0.0
        for step, batch in zip(range(steps), batches.epoch(epoch)):  # zip asks range first: no batch past the cap
            if custom is not None:
                def val_batch(size: int, e: int = epoch, s: int = step) -> dict[str, Any]:
                    draw = np.random.default_rng([cfg.seed, e, s, 7]).integers(0, rows(val), size)
                    return val_rows.take(draw[rank::world])  # type: ignore[union-attr]

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
            done = step + 1
            if done == 1:
                t_first = time.perf_counter()
            if on_step is not None:
                on_step(epoch, done, steps, loss_sum / done)
        if done != steps:  # a stream that ended early would leave the other ranks waiting in all-reduce
            raise RuntimeError(f"epoch {epoch}: rank {rank} got {done} batches, expected {steps}")
        epoch_time = time.perf_counter() - t_epoch
        row: dict[str, float] = {"epoch": epoch, "train_loss": loss_sum / steps, "epoch_time_s": epoch_time,
                                 "samples_per_s": steps * batches.rows_per_step / epoch_time,
                                 "first_step_s": t_first - t_epoch}
        if steps > 1:  # after the first step: without the epoch's start-up (a stream's first blocks)
            row["steady_samples_per_s"] = (steps - 1) * batches.rows_per_step / (time.perf_counter() - t_first)
        if hasattr(state.step_state, "end_epoch"):
            state.step_state.end_epoch(row)
        if rank == 0:
            model.eval()
            with torch.no_grad():
                row |= {f"val_{k}": float(v) for k, v in ingest.evaluate(spec, model, val, cfg).items()}
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
