"""One multi-task optimiser step (Algorithm 1 and the baselines), as plain PyTorch.

This is what the Ray Train harness's custom-step hook would call (see train.py for the hook the
workload needs). The whole update fits on one screen in :meth:`MultiTask.step`:

1. one forward pass of the training batch; per task k the SUM of its squared errors and the COUNT
   of its positions, and g_k_sum = grad of that sum over every parameter (K backward passes);
2. ``ctx.all_reduce`` (a SUM across data-parallel workers; identity in one process) of every
   g_k_sum, loss sum and count, then g_k = g_k_sum / count_k: the gradient of task k's mean loss
   over the GLOBAL batch, the same on every worker whatever the sharding;
3. VAMO only: the same for the validation batch (held-out day): g_val = grad of the mean validation
   loss over all tasks, all-reduced the same way (sum of gradients of sums, divided by the global
   count), then m_k = <g_val, g_k> on the shared parameters (Eq. 7) and w = softmax(m / lambda);
4. d = sum_k w_k g_k (PCGrad: the projected mean on the shared parameters, the plain mean on the
   heads), written into ``.grad``; clip; ``optimizer.step()``. Every worker applies the same d to
   the same parameters, so no DDP gradient averaging happens on top (the harness must not wrap the
   model in DDP, or must run the step under ``no_sync``).

Because the weights come from reduced quantities only, 2 workers give the weights of 1 on the same
global batch (tests/unit/test_vamo_weighting.py checks it with a real 2-process gloo group).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from workloads.vamo.config import TASKS, VamoConfig
from workloads.vamo.weighting import (
    DWA,
    FAMO,
    fairgrad_weights,
    pcgrad,
    vamo_weights,
    vanilla_weights,
)

AllReduce = Callable[[torch.Tensor], torch.Tensor]


def forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch["ext"], batch["ext_valid"], batch["prev_action"], batch["rtg"], batch["step"],
                 batch["task"])


def task_loss_sums(pred: torch.Tensor, batch: dict[str, torch.Tensor], n_tasks: int,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,) sums of squared action errors over valid positions per task, and (K,) their counts.
    Eq. 2 with a fixed-variance Gaussian: -log p = squared error / 2 sigma^2 + const."""
    valid = batch["valid"].to(pred.dtype)
    err = ((pred - batch["target"]) ** 2 * valid).sum(1)
    sums = pred.new_zeros(n_tasks).index_add(0, batch["task"], err)
    counts = valid.new_zeros(n_tasks).index_add(0, batch["task"], valid.sum(1))
    return sums, counts


def flat_grad(loss: torch.Tensor, params: list[nn.Parameter], retain: bool) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def task_gradients(model: nn.Module, batch: dict[str, torch.Tensor], n_tasks: int,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unreduced (K, P) gradients of the per-task loss SUMS, (K,) loss sums, (K,) counts."""
    params = list(model.parameters())
    sums, counts = task_loss_sums(forward(model, batch), batch, n_tasks)
    rows = []
    for k in range(n_tasks):
        if counts[k] > 0:
            rows.append(flat_grad(sums[k], params, retain=True))
        else:
            rows.append(torch.cat([torch.zeros_like(p).reshape(-1) for p in params]))
    return torch.stack(rows), sums.detach(), counts


def val_gradient(model: nn.Module, batch: dict[str, torch.Tensor], n_tasks: int,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unreduced gradient of the validation loss sum over all tasks, the sum, the count."""
    sums, counts = task_loss_sums(forward(model, batch), batch, n_tasks)
    total = sums.sum()
    return flat_grad(total, list(model.parameters()), retain=False), total.detach(), counts.sum()


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclasses.dataclass
class StepContext:
    all_reduce: AllReduce = _identity
    """SUM of a tensor over the data-parallel workers (torch.distributed.all_reduce)."""
    generator: torch.Generator | None = None
    """PCGrad's task order: seeded the same on every worker."""


class MultiTask:
    """The weighting method's state (DWA's epoch losses, FAMO's logits) and the optimiser step."""

    def __init__(self, cfg: VamoConfig, model: nn.Module) -> None:
        self.cfg, self.method, self.k = cfg, cfg.weighting, len(TASKS)
        shared = {id(p) for p in model.shared_parameters()}
        self.shared = torch.cat([torch.full((p.numel(),), id(p) in shared) for p in model.parameters()])
        self.dwa = DWA(self.k, cfg.dwa_temperature)
        self.famo = FAMO(self.k, cfg.famo_lr, cfg.famo_gamma)

    @property
    def needs_val(self) -> bool:
        return self.method == "vamo"

    def weights(self, G: torch.Tensor, losses: torch.Tensor, present: torch.Tensor,
                g_val: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Task weights w (K,) and, for VAMO, the marginal gains m (K,)."""
        gs = G[:, self.shared]
        if self.method == "vamo":
            assert g_val is not None
            return vamo_weights(gs, g_val[self.shared], self.cfg.lam, present, self.cfg.normalize_gains)
        if self.method == "vamo_train":  # ablation: the total training gradient as the target
            return vamo_weights(gs, gs[present].sum(0), self.cfg.lam, present, self.cfg.normalize_gains)
        if self.method == "dwa":
            return self.dwa.weights(present), None
        if self.method == "famo":
            return self.famo.weights(losses, present), None
        if self.method == "fairgrad":
            return fairgrad_weights(gs, present, self.cfg.fairgrad_alpha), None
        return vanilla_weights(present), None  # vanilla, stl (one task present), pcgrad (heads)

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
             val_batch: dict[str, torch.Tensor] | None, ctx: StepContext) -> dict[str, float]:
        red = ctx.all_reduce
        g_sum, sums, counts = task_gradients(model, batch, self.k)
        g_sum, sums, counts = red(g_sum), red(sums), red(counts)
        present = counts > 0
        G = g_sum / counts.clamp_min(1)[:, None]  # gradient of each task's mean loss, global batch
        losses = sums / counts.clamp_min(1)
        g_val = None
        if self.needs_val:
            assert val_batch is not None, "VAMO needs a validation batch (the held-out day)"
            gv, vs, vc = val_gradient(model, val_batch, self.k)
            g_val = red(gv) / red(vc).clamp_min(1)
        w, m = self.weights(G, losses, present, g_val)
        d = (w.to(G.dtype)[:, None] * G).sum(0)
        if self.method == "pcgrad":
            d[self.shared] = pcgrad(G[:, self.shared], present, ctx.generator).to(d.dtype)
        offset = 0
        for p in model.parameters():
            p.grad = d[offset: offset + p.numel()].view_as(p).to(p.dtype).clone()
            offset += p.numel()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        optimizer.step()
        if self.method == "famo":  # FAMO reads the losses of the same batch after the step
            with torch.no_grad():
                after, _ = task_loss_sums(forward(model, batch), batch, self.k)
            self.famo.update(losses, red(after) / counts.clamp_min(1), present)
        out = {f"loss_{t}": float(losses[k]) for k, t in enumerate(TASKS) if present[k]}
        out.update({f"w_{t}": float(w[k]) for k, t in enumerate(TASKS)})
        if m is not None:
            out.update({f"m_{t}": float(m[k]) for k, t in enumerate(TASKS)})
        return out

    def end_epoch(self, task_losses: np.ndarray) -> None:
        self.dwa.end_epoch(task_losses)

    def state_dict(self) -> dict:
        return {"dwa": self.dwa.state_dict(), "famo": self.famo.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.dwa.load_state_dict(state["dwa"])
        self.famo.load_state_dict(state["famo"])
