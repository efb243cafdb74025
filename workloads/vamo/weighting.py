"""Multi-task weightings: VAMO (Algorithm 1) and the paper's baselines, on plain tensors.

Every function takes the per-task training gradients ``G`` (K, P) of the shared parameters theta_s
(and, where it needs them, the task losses or the validation gradient ``g_val`` (P,)) and returns
weights w (K,) of the update ``d = sum_k w_k g_k``, or the direction itself (PCGrad). Tasks absent
from a batch are passed as ``present`` = False and get weight 0.

* Vanilla: w_k = 1/K (Eq. 3).
* VAMO: m_k = <g_val, g_k> (Eq. 7, the marginal gain), w = softmax(m / lambda) (Eq. 8-9).
  ``GainAverage`` (not in the paper, off by default): the softmax of the gains' average over steps.
  ``vamo_train`` ablation ("w/o held-out validation"): g_val replaced by the total training gradient.
* DWA (Liu et al. 2019): w_k = softmax_k(r_k / T) with r_k = L_k(e-1) / L_k(e-2), epoch losses.
* FAMO (Liu et al. 2023): logits xi, z = softmax(xi); the update is the gradient of
  sum_k z_k log L_k, i.e. w_k = z_k / L_k / sum_j (z_j / L_j); after the step xi moves by
  Adam on d = J_softmax^T (log L_before - log L_after) with weight decay gamma.
* PCGrad (Yu et al. 2020): each g_i loses its component along every g_j it conflicts with
  (g_i . g_j < 0), in random order, against the original g_j; the mean of the projections.
* FairGrad (Ban & Ji 2024): alpha-fair weights solving (G G^T w)_k = w_k^(-1/alpha), w > 0.

Scale: weights sum to 1 (Vanilla is the mean of the task gradients) except FairGrad, whose solution
fixes the scale itself. Under Ray Train data parallelism, the step (train.py) all-reduces every
task's gradient sum, loss sum and sample count and the validation gradient before calling these,
so every worker computes the same weights as one process on the global batch.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import least_squares


def _masked_softmax(x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    x = torch.where(present, x, torch.full_like(x, -torch.inf))
    return torch.softmax(x, 0)


def vanilla_weights(present: torch.Tensor) -> torch.Tensor:
    return present.double() / present.sum().clamp_min(1)


def marginal_gains(G: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """m_k = <g_target, g_k> (Eq. 7)."""
    return G.double() @ target.double()


class GainAverage:
    """Not in the paper (issue 22; ``gain_avg``): an exponential moving average over steps of the
    scaled gains, bias-corrected as Adam's moments, so that the weights follow the consistent part
    of the gains rather than one batch's noise. A task's average moves only on steps it is in."""

    def __init__(self, n_tasks: int, beta: float) -> None:
        self.beta = beta
        self.avg = torch.zeros(n_tasks, dtype=torch.float64)
        self.steps = torch.zeros(n_tasks, dtype=torch.float64)

    def __call__(self, scaled: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        b = self.beta
        self.avg = torch.where(present, b * self.avg + (1 - b) * scaled.double(), self.avg)
        self.steps = self.steps + present.double()
        return self.avg / (1 - b ** self.steps).clamp_min(1e-30)

    def state_dict(self) -> dict:
        return {"avg": self.avg.clone(), "steps": self.steps.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.avg, self.steps = state["avg"].clone(), state["steps"].clone()


def vamo_weights(G: torch.Tensor, g_val: torch.Tensor, lam: float, present: torch.Tensor,
                 normalize: bool = False, average: GainAverage | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """w = softmax(m / lambda) (Eq. 9) and the gains m. ``normalize`` divides m by max |m| first;
    ``average`` replaces the step's (scaled) gains by their average over steps."""
    m = marginal_gains(G, g_val)
    scaled = m / m[present].abs().max().clamp_min(1e-30) if normalize and present.any() else m
    if average is not None:
        scaled = average(scaled, present)
    return _masked_softmax(scaled / lam, present), m


class DWA:
    """Dynamic Weight Average; ``weights`` for the current epoch, ``end_epoch`` with its mean losses."""

    def __init__(self, n_tasks: int, temperature: float = 2.0) -> None:
        self.temperature, self.history = temperature, []
        self.n = n_tasks

    def weights(self, present: torch.Tensor) -> torch.Tensor:
        if len(self.history) < 2:
            return vanilla_weights(present)
        r = torch.as_tensor(self.history[-1] / np.maximum(self.history[-2], 1e-12), dtype=torch.float64)
        return _masked_softmax(r / self.temperature, present)

    def end_epoch(self, losses: np.ndarray) -> None:
        self.history.append(np.asarray(losses, dtype=np.float64))

    def state_dict(self) -> dict:
        return {"history": [h.tolist() for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.history = [np.asarray(h) for h in state["history"]]


class FAMO:
    """Fast Adaptive Multitask Optimisation (the authors' update, Adam on the task logits)."""

    def __init__(self, n_tasks: int, lr: float = 0.025, gamma: float = 0.01, eps: float = 1e-8) -> None:
        self.logits = torch.zeros(n_tasks, dtype=torch.float64, requires_grad=True)
        self.opt = torch.optim.Adam([self.logits], lr=lr, weight_decay=gamma)
        self.eps = eps

    def weights(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        z = _masked_softmax(self.logits.detach(), present)
        inv = torch.where(present, z / (losses.double() + self.eps), torch.zeros_like(z))
        return inv / inv.sum().clamp_min(1e-30)

    def update(self, before: torch.Tensor, after: torch.Tensor, present: torch.Tensor) -> None:
        delta = torch.where(present, (before.double() + self.eps).log() - (after.double() + self.eps).log(),
                            torch.zeros_like(self.logits))
        with torch.enable_grad():
            z = torch.softmax(self.logits, 0)
            (grad,) = torch.autograd.grad(z, self.logits, grad_outputs=delta)
        self.opt.zero_grad()
        self.logits.grad = grad
        self.opt.step()

    def state_dict(self) -> dict:
        return {"logits": self.logits.detach().clone(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.logits.copy_(state["logits"])
        self.opt.load_state_dict(state["opt"])


def pcgrad(G: torch.Tensor, present: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """PCGrad direction (P,): the mean over present tasks of the projected gradients."""
    idx = torch.nonzero(present).flatten()
    Gp = G[idx].double()
    out = Gp.clone()
    for i in range(len(idx)):
        for j in torch.randperm(len(idx), generator=generator).tolist():
            if j == i:
                continue
            dot = out[i] @ Gp[j]
            if dot < 0:
                out[i] = out[i] - dot / Gp[j].square().sum().clamp_min(1e-30) * Gp[j]
    return out.mean(0) if len(idx) else G.new_zeros(G.shape[1], dtype=torch.float64)


def fairgrad_weights(G: torch.Tensor, present: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """w > 0 with (G G^T w)_k = w_k^(-1/alpha) over present tasks.

    In units y = w / w0 (w0 = s^(-alpha/(1+alpha)), s = max |G G^T|, so that the root is O(1)) the
    equations are B y = y^(-1/alpha), B = G G^T / s: the gradient of the strictly convex
    phi(y) = y^T B y / 2 - sum_k h(y_k), h' = y^(-1/alpha) (B is positive semi-definite and the
    second term's Hessian is diagonal and positive). Damped Newton on phi finds its one root in a
    few steps (0.45 ms a call against 2.3 ms for least squares, the same root to 4e-12 over 300
    random cases); where it does not converge, nonlinear least squares as the authors' code. A
    task whose gradient is zero has no root: its weight grows until the residual is within
    tolerance, and it multiplies a zero gradient."""
    idx = torch.nonzero(present).flatten()
    w = torch.zeros(G.shape[0], dtype=torch.float64)
    if len(idx) == 0:
        return w
    gtg = (G[idx].double() @ G[idx].double().T).numpy()
    s = max(float(np.abs(gtg).max()), 1e-30)
    x0 = s ** (-alpha / (1 + alpha))  # the solution's scale when G G^T ~ s
    y = _fairgrad_newton(gtg / s, alpha)
    if y is None:
        def residual(y: np.ndarray) -> np.ndarray:  # x = x0 y; the root does not move with the units
            x = x0 * y
            return (gtg @ x - x ** (-1.0 / alpha)) / (s * x0)

        y = least_squares(residual, np.ones(len(idx)), bounds=(1e-9, np.inf), xtol=1e-14, ftol=1e-14,
                          gtol=1e-14).x
    w[idx] = torch.as_tensor(y * x0)
    return w


def _fairgrad_newton(B: np.ndarray, alpha: float, tol: float = 1e-12, max_iter: int = 100) -> np.ndarray | None:
    """The root y > 0 of B y = y^(-1/alpha) (``fairgrad_weights``), or None if not reached."""
    p = 1.0 - 1.0 / alpha

    def phi(y: np.ndarray) -> float:
        h = np.log(y).sum() if alpha == 1.0 else (y ** p).sum() / p
        return float(0.5 * y @ B @ y - h)

    def residual(y: np.ndarray) -> np.ndarray:
        return B @ y - y ** (-1.0 / alpha)

    y = np.ones(len(B))
    f, grad = phi(y), residual(y)
    for _ in range(max_iter):
        if np.abs(grad).max() <= tol * max(1.0, float(np.abs(y ** (-1.0 / alpha)).max())):
            return y
        step = np.linalg.solve(B + np.diag(y ** (-1.0 / alpha - 1.0) / alpha), grad)
        t = 1.0
        while t >= 1e-12:  # stay in y > 0 and go down phi (Armijo), or at least shrink the residual
            nxt = y - t * step
            if (nxt > 0).all():
                f_nxt, g_nxt = phi(nxt), residual(nxt)
                if f_nxt <= f - 1e-4 * t * float(grad @ step) or np.abs(g_nxt).max() < np.abs(grad).max():
                    break
            t *= 0.5
        else:
            return None
        y, f, grad = nxt, f_nxt, g_nxt
    return None
