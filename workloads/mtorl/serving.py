"""The channel policy: a user's journey so far -> the next channel (``POST /v1/channel``).

One request is one user: the states s_1..s_L of the steps so far (the last one is the step to
decide), and for the L-1 past steps the channel shown, its gain g_t and its cost w_t. The policy
rebuilds the model's inputs exactly as training does (reward r_t = MinMaxNorm(g_t - s·w_t) with
the train split's range, Eq. 3) and answers the channel probabilities ŷ_L (Eq. 9), the predicted
reward of the step, and the chosen channel: argmax (Eq. 10) or, with ``policy: stochastic``, a
draw from ŷ_L (Eq. 11) seeded by the request id, so the same request gets the same channel online
and offline; ``propensity`` = ŷ_L[channel] of the draw (1 for argmax).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import torch

from adray.bounds import MAX_MONEY, feature, money
from adray.workload import Policy
from workloads.mtorl.data import load_split
from workloads.mtorl.model import predict


class ChannelResponse(pydantic.BaseModel):
    request_id: str | None = None
    model: str = pydantic.Field(description="name@version that decided")
    channel: int = pydantic.Field(description="the channel of the next exposure")
    propensity: float = pydantic.Field(description="probability the policy gave the chosen channel")
    probs: list[float] = pydantic.Field(description="ŷ: next-channel probabilities")
    predicted_reward: float | None = pydantic.Field(None, description="predicted reward of the step (null for DT)")


class ChannelPolicy(Policy):
    route = "channel"
    summary = "next advertising channel of a user journey"

    @classmethod
    def request_schema(cls, meta: dict[str, Any], max_items: int) -> type[pydantic.BaseModel]:
        dim, m, n = int(meta["state_dim"]), int(meta["num_channels"]), int(meta["window"])
        state = pydantic.conlist(feature("journey state feature (float32)"), min_length=dim, max_length=dim)

        def consistent(self: Any) -> Any:
            past = len(self.states) - 1
            for name in ("channels", "gains", "costs"):
                if len(getattr(self, name)) != past:
                    raise ValueError(f"{name}: expected {past} values (one per past step: len(states) - 1), "
                                     f"got {len(getattr(self, name))}")
            return self

        return pydantic.create_model(
            "ChannelRequest",
            __config__=pydantic.ConfigDict(extra="forbid"),
            __validators__={"consistent": pydantic.model_validator(mode="after")(consistent)},
            request_id=(str | None, None),
            states=(list[state], pydantic.Field(  # type: ignore[valid-type]
                min_length=1, max_length=n,
                description=f"s_1..s_L: {dim} floats per step, the last is the step to decide (L <= {n})")),
            channels=(list[pydantic.conint(ge=0, lt=m)], pydantic.Field(  # type: ignore[valid-type]
                description=f"channel (0..{m - 1}) of each past step")),
            gains=(list[feature("gain g_t of a past step")], pydantic.Field(  # type: ignore[valid-type]
                description="gain g_t of each past step")),
            costs=(list[money(MAX_MONEY, "cost w_t of a past step", positive=False)],  # type: ignore[valid-type]
                   pydantic.Field(description="cost w_t of each past step (money)")),
        )

    @classmethod
    def response_schema(cls, meta: dict[str, Any]) -> type[pydantic.BaseModel]:
        return ChannelResponse

    def _inputs(self, r: dict[str, Any], length: int) -> tuple[np.ndarray, ...]:
        lo, hi = self.meta["reward_minmax"]
        n_past = len(r["channels"])
        action = np.zeros(length, np.int64)
        reward = np.zeros(length, np.float32)
        state = np.zeros((length, int(self.meta["state_dim"])), np.float32)
        mask = np.zeros(length, np.float32)
        action[:n_past] = r["channels"]
        raw = np.asarray(r["gains"], np.float64) - self.cfg.penalty_s * np.asarray(r["costs"], np.float64)
        reward[:n_past] = np.clip((raw - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        state[:n_past + 1] = np.asarray(r["states"], np.float32)
        mask[:n_past + 1] = 1.0
        return action, reward, state, mask

    def decide(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        length = max(len(r["states"]) for r in requests)
        cols = list(zip(*(self._inputs(r, length) for r in requests)))
        tensors = [torch.from_numpy(np.stack(c)) for c in cols]
        with torch.inference_mode():
            probs, r_pred = predict(self.model, *tensors)  # (B, T, m), (B, T)
        out = []
        for i, r in enumerate(requests):
            last = len(r["states"]) - 1
            p = probs[i, last].numpy().astype(np.float64)
            if self.cfg.policy == "stochastic":
                rng = np.random.default_rng(zlib.crc32((r.get("request_id") or "").encode()))
                channel = int(min(np.searchsorted(np.cumsum(p / p.sum()), rng.random(), side="right"), len(p) - 1))
                propensity = float(p[channel])
            else:
                channel, propensity = int(p.argmax()), 1.0
            out.append({"request_id": r.get("request_id"), "model": self.ref, "channel": channel,
                        "propensity": propensity, "probs": [float(v) for v in p],
                        "predicted_reward": None if r_pred is None else float(r_pred[i, last])})
        return out

    @classmethod
    def sample_requests(cls, cfg: Any, data_dir: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
        """Journeys cut from the test split's windows. A window keeps the normalised rewards r_t
        only, so each past step is sent as cost 0 and gain = r_t mapped back through the train
        range: the policy then rebuilds the window's own r_t."""
        w = load_split(Path(data_dir), "test", cfg)
        rng = np.random.default_rng(seed)
        lo, hi = (float(v) for v in w["reward_minmax"][0])
        out = []
        for i in range(n):
            row = int(rng.integers(len(w["action"])))
            valid = int(w["mask"][row].sum())
            length = int(rng.integers(1, valid + 1))
            gains = (w["reward"][row, :length - 1].astype(np.float64) * (hi - lo) + lo).tolist()
            out.append({"request_id": f"u{i}", "states": w["state"][row, :length].astype(float).tolist(),
                        "channels": w["action"][row, :length - 1].astype(int).tolist(),
                        "gains": gains, "costs": [0.0] * (length - 1)})
        return out
