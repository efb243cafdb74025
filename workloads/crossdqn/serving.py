"""Serving policy of Cross DQN: which slots of one screen show ads (``POST /v1/allocate``).

One request is one screen's state, in the blocks of the simulator's observation (``obs_layout``),
each named and of fixed length: ``profile`` (P), ``history`` (T x D), ``ads`` and ``organic``
(K x F each, F = [content (D), value / 5, bid, present]), ``context`` (C). :meth:`decide` stacks
requests into observations exactly as ``FeedSim.observe`` lays them out and answers with the
greedy action of the served scores Q(s,a) - β·PAE(a) (the RLModule's ``forward_inference``, what
``rollout.q_policy`` evaluates), the ad slots it means, the 2^K scores and the action's propensity.

With ``serve_epsilon`` = ε (config) the rule is ε-greedy, as DRL-PUT's utility stage serves: a
share ε of screens gets an action drawn uniformly from the 2^K, decided by a stable hash of
``request_id`` (salted, so that the graph's utility and allocation stages do not explore on the
same requests) and thus reproducible; requests without an id draw from the policy's own seeded
generator. The propensity is (1-ε)·1[a = greedy] + ε/2^K: 1.0 at ε = 0 (the greedy default),
what the decision log needs for the next version's off-policy learning.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pydantic

from adray.bounds import feature
from adray.workload import Policy, epsilon_greedy
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import check_dataset
from workloads.crossdqn.sim import obs_layout

BLOCKS = ("profile", "history", "ads", "organic", "context")
"""Request fields, in the order of the observation vector (FeedSim.observe)."""


_FLOAT32 = feature("observation feature (float32)")


def _vector(n: int, description: str) -> Any:
    return Annotated[list[_FLOAT32], pydantic.Field(min_length=n, max_length=n, description=description)]  # type: ignore[valid-type]


def _matrix(rows: int, cols: int, description: str) -> Any:
    row = Annotated[list[_FLOAT32], pydantic.Field(min_length=cols, max_length=cols)]  # type: ignore[valid-type]
    return Annotated[list[row], pydantic.Field(min_length=rows, max_length=rows, description=description)]  # type: ignore[valid-type]


def _bool_vector(n: int) -> Any:
    return Annotated[list[bool], pydantic.Field(min_length=n, max_length=n, description="slot k shows an ad")]


def request_schema(meta: dict[str, Any], max_items: int = 0) -> type[pydantic.BaseModel]:
    """The pydantic model of one request, from the model's ``obs_layout`` (``max_items`` is unused:
    every list has the fixed length of its block)."""
    lo = meta["obs_layout"]
    k, f, d, t = lo["window"], lo["feat"], lo["item_dim"], lo["hist_len"]
    item = f"[content ({d} floats), value / 5, bid, present]; present 0 (and all zeros) past the end of the list"
    return pydantic.create_model(
        "AllocationRequest",
        __config__=pydantic.ConfigDict(extra="forbid", allow_inf_nan=False),
        request_id=(str | None, None),
        profile=(_vector(lo["profile"], "[stated ad tolerance, activity, past ad CTR, 1]"), ...),
        history=(_matrix(t, d, f"content of the {t} items the user clicked before ({d} floats each)"), ...),
        ads=(_matrix(k, f, f"the next {k} ads of the bid-ranked list, each {item}"), ...),
        organic=(_matrix(k, f, f"the next {k} organic items of the relevance-ranked list, each {item} (bid 0)"), ...),
        context=(_vector(lo["ctx"], "[screen / max screens, share of ads left, share of organic left, "
                                    "PAE so far]"), ...),
    )


def response_schema(meta: dict[str, Any]) -> type[pydantic.BaseModel]:
    """The pydantic model of one answer."""
    k = meta["obs_layout"]["window"]
    return pydantic.create_model(
        "AllocationResponse",
        request_id=(str | None, None),
        model=(str, pydantic.Field(description="name@version that decided")),
        action=(int, pydantic.Field(ge=0, lt=2**k, description=f"slot pattern: bit k = slot k shows an ad (K={k})")),
        ad_slots=(_bool_vector(k), ...),
        q=(Annotated[list[float], pydantic.Field(min_length=2**k, max_length=2**k, description=(
            "served score Q(s,a) - β·PAE(a) of every action a; the greedy action is the argmax"))], ...),
        propensity=(float, pydantic.Field(gt=0, le=1, description="probability of the answered action under "
                                          "the serving rule: 1 greedy, (1-ε)·1[greedy] + ε/2^K ε-greedy")),
    )


def observations(requests: Sequence[dict[str, Any]], layout: dict[str, int]) -> np.ndarray:
    """Requests -> (B, obs_dim) float32, blocks in FeedSim.observe's order."""
    b = len(requests)
    blocks = [np.asarray([r[name] for r in requests], np.float32).reshape(b, -1) for name in BLOCKS]
    obs = np.concatenate(blocks, axis=1)
    if obs.shape[1] != layout["obs_dim"]:
        raise ValueError(f"requests make observations of {obs.shape[1]} floats; the model expects {layout['obs_dim']}")
    return obs


def requests_from_obs(obs: np.ndarray, layout: dict[str, int], ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """(B, obs_dim) observations -> request dicts (the inverse of :func:`observations`)."""
    k, f, d, t = layout["window"], layout["feat"], layout["item_dim"], layout["hist_len"]
    sizes = [layout["profile"], t * d, k * f, k * f, layout["ctx"]]
    shapes = [(-1,), (t, d), (k, f), (k, f), (-1,)]
    parts = np.split(np.asarray(obs, np.float64), np.cumsum(sizes)[:-1], axis=1)
    out = []
    for i in range(len(obs)):
        req: dict[str, Any] = {"request_id": ids[i] if ids is not None else None}
        for name, part, shape in zip(BLOCKS, parts, shapes, strict=True):
            req[name] = part[i].reshape(shape).tolist()
        out.append(req)
    return out


class AllocationPolicy(Policy):
    """Greedy (or ε-greedy) ads allocation of a trained Cross DQN RLModule, one screen per request."""

    route = "allocate"
    summary = "Which slots of a feed screen show ads (Cross DQN)"

    def __init__(self, model: Any, cfg: Any, meta: dict[str, Any], ref: str) -> None:
        super().__init__(model, cfg, meta, ref)
        self.epsilon = float(getattr(cfg, "serve_epsilon", 0.0))
        self._rng = np.random.default_rng(int(getattr(cfg, "seed", 0)))  # requests without an id

    @classmethod
    def request_schema(cls, meta: dict[str, Any], max_items: int) -> type[Any]:
        return request_schema(meta, max_items)

    @classmethod
    def response_schema(cls, meta: dict[str, Any]) -> type[Any]:
        return response_schema(meta)

    def decide(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        import torch
        from ray.rllib.algorithms.dqn.dqn_learner import QF_PREDS
        from ray.rllib.core.columns import Columns

        if not requests:
            return []
        layout = self.meta["obs_layout"]
        device = self.model.net.bits.device
        obs = torch.as_tensor(observations(requests, layout), device=device)
        model = self.model
        with torch.inference_mode():
            # a served module is in eval mode already: RLlib's forward_inference would call
            # eval() (a walk over every submodule) on each call, ~1% of a feed replica's CPU
            batch = {Columns.OBS: obs}
            out = model.forward_inference(batch) if model.training else model._forward_inference(batch)
        greedy = out[Columns.ACTIONS].cpu().numpy()
        scores = out[QF_PREDS].cpu().numpy().astype(np.float64)
        k, eps = layout["window"], self.epsilon
        answers = []
        for r, g, q in zip(requests, greedy, scores, strict=True):
            a, prop = epsilon_greedy(int(g), r.get("request_id"), 2**k, eps, salt="crossdqn:", rng=self._rng)
            answers.append({"request_id": r.get("request_id"), "model": self.ref, "action": a,
                            "ad_slots": [bool((a >> s) & 1) for s in range(k)], "q": q.tolist(),
                            "propensity": prop})
        return answers

    @classmethod
    def sample_requests(cls, cfg: CrossDQNConfig, data_dir: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
        """``n`` screens of the logged dataset's ``obs`` column (rows drawn with ``seed``)."""
        from adray import rl

        obs = rl.read_transitions(check_dataset(cfg, data_dir), ["obs"])["obs"].astype(np.float32)
        rows = np.random.default_rng(seed).choice(len(obs), size=n, replace=n > len(obs))
        return requests_from_obs(obs[rows], obs_layout(cfg.sim), ids=[f"logged-{r}" for r in rows])
