"""PWiseR inference networks: multi-task SharedBottom, MMoE, PLE and single-task DNN, MaskNet.

Contract (Serve depends on it): ``model(x_cat (B, C) int64, x_num (B, D) float32)`` returns
probabilities of shape (B,): ``{"ctr", "cvr", "ctcvr"}`` for multi-task models, with
``ctcvr = ctr * cvr`` (ESMM's entire-space chain: impression -> click -> conversion), and
``{"ctr"}`` for single-task ones. ``logits`` gives the pre-sigmoid ``{"ctr", "cvr"}`` the loss uses.
The PWiseR loss itself lives in train.py; nothing here depends on it.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn

from adray.blocks import MLP, CGCLayer, FeatureEmbedding, MaskBlock, MixtureOfExperts
from adray.data import FeatureMap

from .config import PWiseRConfig


class _Base(nn.Module, abc.ABC):
    multitask: bool = True

    def __init__(self, feature_map: FeatureMap, cfg: PWiseRConfig) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(feature_map, cfg.embedding_dim)
        self.in_dim = self.embedding.num_fields * cfg.embedding_dim

    def _tower(self, in_dim: int, cfg: PWiseRConfig) -> MLP:
        return MLP(in_dim, cfg.tower_units, out_dim=1, dropout=cfg.dropout)

    @abc.abstractmethod
    def logits(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pre-sigmoid scores per task: {"ctr": (B,)} and, for multi-task models, {"cvr": (B,)}."""

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.logits(x_cat, x_num)
        p_ctr = torch.sigmoid(z["ctr"])  # (B,)
        if not self.multitask:
            return {"ctr": p_ctr}
        p_cvr = torch.sigmoid(z["cvr"])  # (B,) post-click conversion probability
        return {"ctr": p_ctr, "cvr": p_cvr, "ctcvr": p_ctr * p_cvr}


class SharedBottom(_Base):
    """Caruana 1997: one shared MLP, a tower per task."""

    def __init__(self, feature_map: FeatureMap, cfg: PWiseRConfig) -> None:
        super().__init__(feature_map, cfg)
        self.bottom = MLP(self.in_dim, cfg.bottom_units, dropout=cfg.dropout)
        self.towers = nn.ModuleList(self._tower(self.bottom.out_dim, cfg) for _ in range(2))

    def logits(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.bottom(self.embedding(x_cat, x_num).flatten(1))  # (B, H)
        return {"ctr": self.towers[0](h).squeeze(-1), "cvr": self.towers[1](h).squeeze(-1)}


class MMoE(_Base):
    """Ma et al. 2018: shared experts, one softmax gate per task, a tower per task."""

    def __init__(self, feature_map: FeatureMap, cfg: PWiseRConfig) -> None:
        super().__init__(feature_map, cfg)
        self.moe = MixtureOfExperts(self.in_dim, cfg.num_experts, cfg.expert_units, 2, cfg.dropout)
        self.towers = nn.ModuleList(self._tower(self.moe.out_dim, cfg) for _ in range(2))

    def logits(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> dict[str, torch.Tensor]:
        h_ctr, h_cvr = self.moe(self.embedding(x_cat, x_num).flatten(1))  # 2 x (B, H)
        return {"ctr": self.towers[0](h_ctr).squeeze(-1), "cvr": self.towers[1](h_cvr).squeeze(-1)}


class PLE(_Base):
    """Tang et al. 2020: ``num_levels`` CGC layers of task-specific + shared experts, then towers."""

    def __init__(self, feature_map: FeatureMap, cfg: PWiseRConfig) -> None:
        super().__init__(feature_map, cfg)
        levels, width = [], self.in_dim
        for level in range(cfg.num_levels):
            layer = CGCLayer(width, 2, cfg.num_specific_experts, cfg.num_experts, cfg.expert_units,
                             cfg.dropout, shared_output=level < cfg.num_levels - 1)
            levels.append(layer)
            width = layer.out_dim
        self.levels = nn.ModuleList(levels)
        self.towers = nn.ModuleList(self._tower(width, cfg) for _ in range(2))

    def logits(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.embedding(x_cat, x_num).flatten(1)  # (B, F*dim)
        h = [x, x, x]  # ctr input, cvr input, shared input
        for layer in self.levels:
            h = layer(h)
        return {"ctr": self.towers[0](h[0]).squeeze(-1), "cvr": self.towers[1](h[1]).squeeze(-1)}


class DNN(_Base):
    """Single-task CTR: an MLP on the concatenated field embeddings."""

    multitask = False

    def __init__(self, feature_map: FeatureMap, cfg: PWiseRConfig) -> None:
        super().__init__(feature_map, cfg)
        self.mlp = MLP(self.in_dim, cfg.dnn_units, out_dim=1, dropout=cfg.dropout)

    def logits(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ctr": self.mlp(self.embedding(x_cat, x_num).flatten(1)).squeeze(-1)}


class MaskNet(_Base):
    """Single-task CTR, parallel MaskNet (Wang et al. 2021): ``mask_blocks`` MaskBlocks on the
    embedding, concatenated, then an MLP (FuxiCTR's ParallelMaskNet variant)."""

    multitask = False

    def __init__(self, feature_map: FeatureMap, cfg: PWiseRConfig) -> None:
        super().__init__(feature_map, cfg)
        self.blocks = nn.ModuleList(
            MaskBlock(self.in_dim, self.in_dim, cfg.mask_block_dim) for _ in range(cfg.mask_blocks)
        )
        self.mlp = MLP(cfg.mask_blocks * cfg.mask_block_dim, cfg.tower_units, out_dim=1, dropout=cfg.dropout)

    def logits(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> dict[str, torch.Tensor]:
        v = self.embedding(x_cat, x_num).flatten(1)  # (B, F*dim)
        h = torch.cat([b(v, v) for b in self.blocks], dim=-1)  # (B, blocks * block_dim)
        return {"ctr": self.mlp(h).squeeze(-1)}


MODELS: dict[str, type[_Base]] = {
    "sharedbottom": SharedBottom, "mmoe": MMoE, "ple": PLE, "dnn": DNN, "masknet": MaskNet,
}


def build_model(cfg: PWiseRConfig, meta: dict[str, Any]) -> _Base:
    """The network named by ``cfg.model`` for the dataset's ``meta["feature_map"]``."""
    return MODELS[cfg.model](FeatureMap.from_dict(meta["feature_map"]), cfg)
