"""One multi-task optimiser step (Algorithm 1 and the baselines): the harness's custom step.

``adray.train_torch.TorchSpec(step=vamo_step, step_state=MultiTask)`` runs it in every Ray Train
worker (and in ``fit_in_process``) through the one epoch loop, ``adray.epochs.run_epochs``: each
rank gets its shard of the global training batch (rows r::world of the epoch's permutation) and an
``adray.epochs.StepContext``. The whole update fits on one screen in :meth:`MultiTask.step`:

1. one forward pass of this rank's training shard; per task k the SUM of its squared errors and the
   COUNT of its positions, and g_k_sum = grad of that sum over every parameter (K backward passes);
2. VAMO only: this rank's shard of the validation batch (``ctx.val_batch(batch_size)``: rows of the
   held-out day drawn alike on every rank) and g_val_sum = grad of its summed squared error over all
   tasks, with its sum and count (one more backward pass);
3. ONE ``ctx.all_reduce`` (SUM over the workers, in place; identity on one worker) of the flat
   concatenation [g_1_sum .. g_K_sum, loss sums, counts (, g_val_sum, val sum, val count)]; then
   g_k = g_k_sum / count_k is the gradient of task k's mean loss over the GLOBAL batch and
   g_val = g_val_sum / val_count the gradient of the mean validation loss over the global validation
   batch, whatever the sharding: sums of gradients of sums are exact, means of means would not be;
4. the weights from reduced quantities only (VAMO: m_k = <g_val, g_k> on the shared parameters,
   Eq. 7, w = softmax(m / lambda), Eq. 9; with ``gain_avg`` > 0, of m's average over steps);
   d = sum_k w_k g_k (PCGrad: the projected mean on the shared parameters, its task order from
   ``ctx.generator``, the same on every rank), written into ``.grad``; clip; ``optimizer.step()``.
   Every rank applies the same d to the same parameters, so nothing is averaged on top (the harness
   does not, when a custom step is given);
5. FAMO: the losses of the same batch after the step (a second forward), all-reduced likewise.

So 2 workers take the step of 1 on the same global batch up to float summation order
(tests/unit/test_vamo_weighting.py, through ``run_epochs`` with 2 ranks). The state (DWA's epoch
losses, FAMO's logits and their Adam) is :class:`MultiTask`, checkpointed by the harness every epoch;
its ``end_epoch`` feeds DWA the epoch's mean task losses and adds each task's mean loss, weight and
(VAMO) gain to the epoch's history row, and the mean cosine of every two tasks' gradients on the
shared parameters (``train_cos_<a>_<b>``: do the tasks conflict? and ``train_conflict_<a>_<b>``, the
share of steps where that cosine was negative) and of each with the validation gradient
(``train_cos_val_<task>``, VAMO: what its gains see before their scale).

Differences from the paper, on purpose: batches are the harness's (a permutation of the training
windows per epoch, task proportions matched in expectation rather than exactly, Alg. 1 line 5; the
validation batch uniform over the held-out day's windows); g_val is the gradient of the validation
loss pooled over positions (each task weighted by its share of the day) rather than of Eq. 4's
unweighted mean of the K task means.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from workloads.vamo.config import TASKS, VamoConfig
from workloads.vamo.weighting import (
    DWA,
    FAMO,
    GainAverage,
    fairgrad_weights,
    pcgrad,
    vamo_weights,
    vanilla_weights,
)


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


class MultiTask:
    """The weighting method's state (DWA's epoch losses, FAMO's logits) and the optimiser step:
    ``TorchSpec.step_state`` (``MultiTask(cfg, model)``), one per rank, the same on every rank."""

    def __init__(self, cfg: VamoConfig, model: nn.Module) -> None:
        self.cfg, self.method, self.k = cfg, cfg.weighting, len(TASKS)
        shared = {id(p) for p in model.shared_parameters()}
        self.shared = torch.cat([torch.full((p.numel(),), id(p) in shared) for p in model.parameters()])
        self.dwa = DWA(self.k, cfg.dwa_temperature)
        self.famo = FAMO(self.k, cfg.famo_lr, cfg.famo_gamma)
        self.gains = GainAverage(self.k, cfg.gain_avg) if cfg.gain_avg > 0 else None
        self._epoch: dict[str, np.ndarray] = {}

    @property
    def needs_val(self) -> bool:
        return self.method == "vamo"

    def weights(self, G: torch.Tensor, losses: torch.Tensor, present: torch.Tensor,
                g_val: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Task weights w (K,) and, for VAMO, the marginal gains m (K,)."""
        gs = G[:, self.shared]
        if self.method == "vamo":
            assert g_val is not None
            return vamo_weights(gs, g_val[self.shared], self.cfg.lam, present, self.cfg.normalize_gains, self.gains)
        if self.method == "vamo_train":  # ablation: the total training gradient as the target
            return vamo_weights(gs, gs[present].sum(0), self.cfg.lam, present, self.cfg.normalize_gains, self.gains)
        if self.method == "dwa":
            return self.dwa.weights(present), None
        if self.method == "famo":
            return self.famo.weights(losses, present), None
        if self.method == "fairgrad":
            return fairgrad_weights(gs, present, self.cfg.fairgrad_alpha), None
        return vanilla_weights(present), None  # vanilla, stl (one task present), pcgrad (heads)

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
             ctx: Any) -> dict[str, float]:
        """One update on this rank's shard ``batch``; ``ctx`` an ``adray.epochs.StepContext``."""
        k = self.k
        g_sum, sums, counts = task_gradients(model, batch, k)  # (K, P), (K,), (K,): this rank's
        p = g_sum.shape[1]
        parts = [g_sum.reshape(-1), sums, counts]
        if self.needs_val:
            gv, vs, vc = val_gradient(model, ctx.val_batch(self.cfg.batch_size), k)
            parts += [gv, vs.reshape(1), vc.reshape(1)]
        flat = ctx.all_reduce(torch.cat([x.detach().reshape(-1).float() for x in parts]))  # one collective
        flat = flat.cpu()  # the weights on the CPU (K x P: small), whatever the training device
        g_sum, sums, counts = flat[: k * p].view(k, p), flat[k * p: k * p + k], flat[k * p + k: k * p + 2 * k]
        present = counts > 0
        G = g_sum / counts.clamp_min(1)[:, None]  # gradient of each task's mean loss, global batch
        losses = sums / counts.clamp_min(1)
        g_val = flat[k * p + 2 * k: -2] / flat[-1].clamp_min(1) if self.needs_val else None
        w, m = self.weights(G, losses, present, g_val)
        d = (w.to(G.dtype)[:, None] * G).sum(0)
        if self.method == "pcgrad":
            d[self.shared] = pcgrad(G[:, self.shared], present, ctx.generator).to(d.dtype)
        offset = 0
        for param in model.parameters():
            param.grad = d[offset: offset + param.numel()].view_as(param).to(param.device, param.dtype).clone()
            offset += param.numel()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        optimizer.step()
        if self.method == "famo":  # FAMO reads the losses of the same batch after the step
            with torch.no_grad():
                after, _ = task_loss_sums(forward(model, batch), batch, k)
            after = ctx.all_reduce(after.float()).cpu()
            self.famo.update(losses, after / counts.clamp_min(1), present)
        self._accumulate(losses, present, w, m)
        self._agreement(G[:, self.shared], present, None if g_val is None else g_val[self.shared])
        out = {"loss": float(sums.sum() / counts.sum().clamp_min(1))}
        out.update({f"loss_{t}": float(losses[i]) for i, t in enumerate(TASKS) if present[i]})
        out.update({f"w_{t}": float(w[i]) for i, t in enumerate(TASKS)})
        if m is not None:
            out.update({f"m_{t}": float(m[i]) for i, t in enumerate(TASKS)})
        return out

    def _sums(self) -> dict[str, np.ndarray]:
        """The epoch's running sums, created at its first step."""
        e, k = self._epoch, self.k
        if not e:
            e.update(loss=np.zeros(k), seen=np.zeros(k), w=np.zeros(k), w2=np.zeros(k), m=np.zeros(k),
                     steps=np.zeros(1), cos=np.zeros((k, k)), cos_n=np.zeros((k, k)), conflict=np.zeros((k, k)),
                     cos_val=np.zeros(k), cos_val_n=np.zeros(k))
        return e

    def _accumulate(self, losses: torch.Tensor, present: torch.Tensor, w: torch.Tensor,
                    m: torch.Tensor | None) -> None:
        e = self._sums()
        on = present.numpy()
        wn = w.double().numpy()
        e["loss"] += np.where(on, losses.double().numpy(), 0.0)
        e["seen"] += on
        e["w"] += wn
        e["w2"] += wn ** 2
        e["steps"] += 1
        if m is not None:
            e["m"] += m.double().numpy()

    def _agreement(self, gs: torch.Tensor, present: torch.Tensor, g_val: torch.Tensor | None) -> None:
        """Diagnostics: the cosine of every two tasks' gradients on the shared parameters (do the
        tasks conflict?) and, with a validation gradient, of each task's with it (what VAMO's gains
        see, before their scale), summed over the epoch's steps where both are there."""
        e = self._sums()
        gd = gs.double()
        unit = gd / gd.norm(dim=1, keepdim=True).clamp_min(1e-30)
        on = present.numpy()
        both = np.outer(on, on)
        cos = (unit @ unit.T).numpy()
        e["cos"] += np.where(both, cos, 0.0)
        e["cos_n"] += both
        e["conflict"] += both & (cos < 0)  # the steps where PCGrad projects
        if g_val is not None:
            v = g_val.double()
            v = v / v.norm().clamp_min(1e-30)
            e["cos_val"] += np.where(on, (unit @ v).numpy(), 0.0)
            e["cos_val_n"] += on

    def end_epoch(self, row: dict[str, float]) -> None:
        """After each epoch (the harness, on every rank): DWA's epoch losses; the epoch's mean task
        losses, weights, gains and gradient cosines added to ``row`` (the history row)."""
        e, self._epoch = self._epoch, {}
        if not e:
            return
        task_losses = np.where(e["seen"] > 0, e["loss"] / np.maximum(e["seen"], 1), np.nan)
        self.dwa.end_epoch(task_losses)
        for i, t in enumerate(TASKS):
            if e["seen"][i] > 0:
                row[f"train_loss_{t}"] = float(task_losses[i])
            row[f"train_w_{t}"] = float(e["w"][i] / e["steps"][0])
            # how far the weights move step to step (their std over the epoch's steps)
            mean_sq = e["w2"][i] / e["steps"][0]
            row[f"train_w_sd_{t}"] = float(np.sqrt(max(mean_sq - row[f"train_w_{t}"] ** 2, 0.0)))
            if self.needs_val or self.method == "vamo_train":
                row[f"train_m_{t}"] = float(e["m"][i] / e["steps"][0])
            if e["cos_val_n"][i] > 0:
                row[f"train_cos_val_{t}"] = float(e["cos_val"][i] / e["cos_val_n"][i])
            for j in range(i + 1, self.k):
                if e["cos_n"][i, j] > 0:
                    row[f"train_cos_{t}_{TASKS[j]}"] = float(e["cos"][i, j] / e["cos_n"][i, j])
                    row[f"train_conflict_{t}_{TASKS[j]}"] = float(e["conflict"][i, j] / e["cos_n"][i, j])

    def state_dict(self) -> dict:
        out = {"dwa": self.dwa.state_dict(), "famo": self.famo.state_dict()}
        if self.gains is not None:
            out["gains"] = self.gains.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        self.dwa.load_state_dict(state["dwa"])
        self.famo.load_state_dict(state["famo"])
        if self.gains is not None:
            self.gains.load_state_dict(state["gains"])


def vamo_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
              cfg: VamoConfig, ctx: Any) -> dict[str, float]:
    """``TorchSpec.step``: :meth:`MultiTask.step` of the rank's state (``ctx.state``)."""
    return ctx.state.step(model, optimizer, batch, ctx)
