"""The DRL-PUT policy network (Sec. 4.2) and its RLlib RLModule; inference only is what Serve loads.

    e_j   = Embedding_j(x_cat,j)                     one table per categorical feature   (B, d) each
    h_0   = [e_1, ..., e_C, x_num]                                                       (B, C·d + N)
    h_l   = ReLU(Linear(BatchNorm(h_{l-1})))          l = 1..L                           (B, H)
    π(·|s) = softmax(Linear(h_L))                     over the discretised action space  (B, |A|)

The critic of the actor-critic variant, V(s) (B,), is a separate network of the same shape with
one output (no shared trunk: its regression loss must not reshape the policy's features); it
is not part of the inference module. The observation is the flat vector of ``sim.observe``:
categorical codes (as floats) first, in ``columns.CAT_FEATURES`` order, then the numericals.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from workloads.drlput import columns as C

CRITIC = "critic"


class PolicyNet(nn.Module):
    """State features -> logits over A (B, |A|) (or one value with ``num_outputs=1``). Plain torch."""

    def __init__(self, num_outputs: int, embed_dim: int = 8, hidden: tuple[int, ...] = (64, 64),
                 cat_sizes: tuple[int, ...] = tuple(C.CAT_FEATURES.values()),
                 num_numeric: int = len(C.NUM_FEATURES)) -> None:
        super().__init__()
        self.n_cat = len(cat_sizes)
        self.embeddings = nn.ModuleList(nn.Embedding(card, embed_dim) for card in cat_sizes)
        layers: list[nn.Module] = []
        width = self.n_cat * embed_dim + num_numeric
        for h in hidden:  # Sec. 4.2: batch norm, linear, ReLU
            layers += [nn.BatchNorm1d(width), nn.Linear(width, h), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        cat = obs[:, : self.n_cat].long()  # (B, C)
        emb = [table(cat[:, j]) for j, table in enumerate(self.embeddings)]  # C x (B, d)
        x = torch.cat([*emb, obs[:, self.n_cat :]], dim=1)  # (B, C·d + N)
        return self.head(self.trunk(x))


NET_KEYS = ("embed_dim", "hidden")


class DRLPUTModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """RLModule around :class:`PolicyNet`; ``model_config``: embed_dim, hidden, critic (bool).

    Exploration samples from π(·|s) (online training); inference takes the argmax, as the paper
    serves "the action with the highest probability".
    """

    def setup(self) -> None:
        mc: dict[str, Any] = dict(self.model_config or {})
        kwargs = {k: (tuple(mc[k]) if k == "hidden" else mc[k]) for k in NET_KEYS if k in mc}
        self.policy = PolicyNet(int(self.action_space.n), **kwargs)
        self.use_critic = bool(mc.get(CRITIC, False)) and not self.inference_only
        if self.use_critic:
            self.critic = PolicyNet(1, **kwargs)

    def get_non_inference_attributes(self) -> list[str]:
        return ["critic"] if self.use_critic else []

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.policy(batch[Columns.OBS])}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        out = self._forward(batch)
        if self.use_critic:
            out[Columns.VF_PREDS] = self.critic(batch[Columns.OBS]).squeeze(-1)  # (B,)
        return out

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if not self.use_critic:
            raise ValueError("this DRLPUTModule has no critic (model_config critic=False or inference only)")
        return self.critic(batch[Columns.OBS]).squeeze(-1)


def module_config(embed_dim: int, hidden: tuple[int, ...], critic: bool) -> dict[str, Any]:
    """The RLModule ``model_config`` (plain JSON-able dict, saved in meta)."""
    return {"embed_dim": embed_dim, "hidden": list(hidden), CRITIC: critic}
