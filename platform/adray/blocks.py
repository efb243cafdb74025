"""Small neural-network blocks shared by workloads (FuxiCTR-style: models are short wirings of these).

* :class:`MLP`: Linear -> activation -> dropout stacks.
* :class:`FeatureEmbedding`: the :class:`adray.data.FeatureMap` inputs (categorical ids, numeric
  values) as one embedding vector per field.
* :class:`MixtureOfExperts`: MMoE's experts with one softmax gate per task (Ma et al., KDD 2018).
* :class:`CGCLayer`: PLE's customized gate control layer, task-specific + shared experts
  (Tang et al., RecSys 2020).
* :class:`MaskBlock`: MaskNet's instance-guided mask block (Wang et al., 2021).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adray.data import FeatureMap


class MLP(nn.Sequential):
    """``in_dim -> hidden[0] -> ... -> hidden[-1] (-> out_dim)`` with ReLU and dropout.

    Args:
        in_dim: input width.
        hidden: hidden layer widths (may be empty).
        out_dim: width of a final plain Linear (no activation); None for none.
        dropout: dropout after each hidden activation.
        batch_norm: BatchNorm1d before each hidden activation.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int | None = None,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        super().__init__(*layers)
        self.out_dim = width


class FeatureEmbedding(nn.Module):
    """One ``dim``-vector per field: an id embedding per categorical field and ``value * w_f`` per
    numeric field (FuxiCTR's numeric embedding), stacked into (B, F, dim), F = C + D.

    Id 0 is the unknown / out-of-vocabulary id of every field (see FeatureMap); it has its own
    learned vector like any other id.
    """

    def __init__(self, feature_map: FeatureMap, dim: int) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(v, dim) for v in feature_map.vocab_sizes)
        self.num_weight = nn.Parameter(torch.empty(len(feature_map.numeric), dim))
        self.num_bias = nn.Parameter(torch.zeros(len(feature_map.numeric), dim))
        for emb in self.embeddings:
            nn.init.normal_(emb.weight, std=1e-2)
        nn.init.normal_(self.num_weight, std=1e-2)
        self.num_fields = len(feature_map.categorical) + len(feature_map.numeric)
        self.dim = dim

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        parts = [emb(x_cat[:, j]) for j, emb in enumerate(self.embeddings)]  # C x (B, dim)
        cat = torch.stack(parts, dim=1) if parts else x_num.new_zeros(len(x_num), 0, self.dim)  # (B, C, dim)
        num = x_num.unsqueeze(-1) * self.num_weight + self.num_bias  # (B, D, dim)
        return torch.cat([cat, num], dim=1)  # (B, F, dim)


class MixtureOfExperts(nn.Module):
    """MMoE: ``f_t(x) = sum_e softmax(W_t x)_e * expert_e(x)`` for each task t.

    Returns a list of (B, H) task inputs, H = the experts' output width.
    """

    def __init__(
        self, in_dim: int, num_experts: int, expert_hidden: Sequence[int], num_tasks: int, dropout: float
    ) -> None:
        super().__init__()
        self.experts = nn.ModuleList(MLP(in_dim, expert_hidden, dropout=dropout) for _ in range(num_experts))
        self.gates = nn.ModuleList(nn.Linear(in_dim, num_experts) for _ in range(num_tasks))
        self.out_dim = self.experts[0].out_dim

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # (B, E, H)
        outs = []
        for gate in self.gates:
            w = torch.softmax(gate(x), dim=-1)  # (B, E)
            outs.append(torch.einsum("be,beh->bh", w, experts))  # (B, H)
        return outs


class CGCLayer(nn.Module):
    """PLE's customized gate control (one extraction level).

    Task t's output mixes its own ``num_specific`` experts and the ``num_shared`` shared experts
    with a softmax gate on task t's input. When ``shared_output`` (every level but the last), a
    shared gate over all experts produces the input of the next level's shared experts.

    Inputs and outputs: a list of T task inputs followed by the shared input, each (B, in_dim).
    """

    def __init__(
        self,
        in_dim: int,
        num_tasks: int,
        num_specific: int,
        num_shared: int,
        expert_hidden: Sequence[int],
        dropout: float,
        shared_output: bool,
    ) -> None:
        super().__init__()

        def experts(n: int) -> nn.ModuleList:
            return nn.ModuleList(MLP(in_dim, expert_hidden, dropout=dropout) for _ in range(n))

        self.specific = nn.ModuleList(experts(num_specific) for _ in range(num_tasks))
        self.shared = experts(num_shared)
        self.task_gates = nn.ModuleList(nn.Linear(in_dim, num_specific + num_shared) for _ in range(num_tasks))
        self.shared_gate = (
            nn.Linear(in_dim, num_tasks * num_specific + num_shared) if shared_output else None
        )
        self.out_dim = self.shared[0].out_dim

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        *task_in, shared_in = inputs
        shared = [e(shared_in) for e in self.shared]  # S x (B, H)
        outs, all_specific = [], []
        for t, x in enumerate(task_in):
            own = [e(x) for e in self.specific[t]]  # P x (B, H)
            all_specific += own
            pool = torch.stack(own + shared, dim=1)  # (B, P + S, H)
            w = torch.softmax(self.task_gates[t](x), dim=-1)  # (B, P + S)
            outs.append(torch.einsum("be,beh->bh", w, pool))  # (B, H)
        if self.shared_gate is not None:
            pool = torch.stack(all_specific + shared, dim=1)  # (B, T*P + S, H)
            w = torch.softmax(self.shared_gate(shared_in), dim=-1)
            outs.append(torch.einsum("be,beh->bh", w, pool))
        else:
            outs.append(shared_in)
        return outs


class MaskBlock(nn.Module):
    """MaskNet's MaskBlock on feature embeddings (Wang et al. 2021, Eq. 5-9).

    ``V_mask = W2 relu(W1 V_emb)`` (instance-guided mask from the whole embedding), then
    ``out = relu(LN(W_h (V_mask * LN(V_in))))``. In the parallel MaskNet V_in = V_emb.
    """

    def __init__(self, emb_dim: int, in_dim: int, out_dim: int, reduction: float = 1.0) -> None:
        super().__init__()
        self.mask = nn.Sequential(
            nn.Linear(emb_dim, max(1, int(emb_dim * reduction))), nn.ReLU(),
            nn.Linear(max(1, int(emb_dim * reduction)), in_dim),
        )
        self.in_norm = nn.LayerNorm(in_dim)
        self.hidden = nn.Linear(in_dim, out_dim, bias=False)
        self.out_norm = nn.LayerNorm(out_dim)

    def forward(self, v_emb: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        v_mask = self.mask(v_emb)  # (B, in_dim)
        return torch.relu(self.out_norm(self.hidden(v_mask * self.in_norm(v_in))))  # (B, out_dim)
