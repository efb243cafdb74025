"""The discretised, grouped action space (Sec. 3.3) and the behaviour policies over it (Sec. 5).

Each parameter p of Eq. 3.1 gets a range [lo_p, hi_p] and n equally spaced values
``lo_p + (hi_p - lo_p)·k/(n-1)``, k = 0..n-1. Parameters of one group share the index k, so an
action is one index per group: ``a = Σ_g k_g · n^g`` (group 0 varies fastest) and |A| = n^G.
"""

from __future__ import annotations

import numpy as np

from workloads.drlput.config import PARAMS, ActionConfig


class ActionSpace:
    """Index <-> parameter values of the grouped grid; ``values`` is the (|A|, 4) table."""

    def __init__(self, cfg: ActionConfig) -> None:
        self.cfg = cfg
        self.n, self.groups = cfg.n_values, tuple(tuple(g) for g in cfg.groups)
        self.size = cfg.num_actions
        self.index = self._indices(np.arange(self.size))  # (A, G) value index of each group
        grid = np.linspace(0.0, 1.0, self.n)  # (n,)
        self.values = np.zeros((self.size, len(PARAMS)))  # (A, P) in PARAMS order
        for g, names in enumerate(self.groups):
            for name in names:
                lo, hi = getattr(cfg, name)
                self.values[:, PARAMS.index(name)] = lo + (hi - lo) * grid[self.index[:, g]]

    def _indices(self, actions: np.ndarray) -> np.ndarray:
        return (np.asarray(actions)[:, None] // self.n ** np.arange(len(self.groups))[None, :]) % self.n

    def encode(self, index: np.ndarray) -> np.ndarray:
        """(N, G) value indices -> (N,) action ids."""
        return (np.asarray(index) * self.n ** np.arange(len(self.groups))[None, :]).sum(1)

    def params(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """{parameter: (N,) value} of actions (N,)."""
        v = self.values[np.asarray(actions)]
        return {name: v[:, i] for i, name in enumerate(PARAMS)}

    def nearest(self, point: tuple[float, ...]) -> int:
        """The action closest to a point of PARAMS values (per group: the mean of its members' indices)."""
        k = []
        for names in self.groups:
            pos = [(point[PARAMS.index(p)] - getattr(self.cfg, p)[0]) / np.subtract(*getattr(self.cfg, p)[::-1])
                   for p in names]
            k.append(int(np.clip(np.rint(np.mean(pos) * (self.n - 1)), 0, self.n - 1)))
        return int(self.encode(np.array([k]))[0])

    def uniform_probs(self) -> np.ndarray:
        """μ(a) = 1/|A| (A,)."""
        return np.full(self.size, 1.0 / self.size)

    def gaussian_probs(self, sigma: float) -> np.ndarray:
        """Discretised Gaussian around the production action (A,): each group's index k_g gets
        weight exp(-(k_g - k*_g)^2 / (2 (σ (n-1))^2)), groups independent. The paper's
        ``closest(N(w*, σ))``: every action keeps a positive propensity, but few far from w*."""
        centre = self._indices(np.array([self.nearest(self.cfg.production)]))[0]  # (G,)
        scale = sigma * (self.n - 1)
        logw = -((self.index - centre[None, :]) ** 2).sum(1) / (2 * scale**2)  # (A,)
        w = np.exp(logw - logw.max())
        return w / w.sum()


def behaviour_probs(space: ActionSpace, policy: str, sigma: float) -> np.ndarray:
    """μ(a) of a behaviour policy (state-independent here, as in the paper)."""
    if policy == "uniform":
        return space.uniform_probs()
    if policy == "gaussian":
        return space.gaussian_probs(sigma)
    raise ValueError(f"behaviour policy {policy!r}: expected 'uniform' or 'gaussian'")
