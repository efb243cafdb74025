"""The utility stage's serving policy: the state of one ad request -> the utility's parameters (Eq. 3.1).

``POST /v1/utility`` with the request's state features (``columns.STATE``; categorical codes are
bounded by their cardinalities) answers the chosen action's parameter values (``w_click``,
``w_long``, ``w_conv``, ``reserve``), the action index, its propensity under the serving rule, and
the model. The rule is the paper's argmax of π(·|s), or with ``serve_epsilon`` = ε an ε-greedy
draw (uniform over A with probability ε, decided by a stable hash of ``request_id`` so that an
answer is reproducible); the propensity is then (1-ε)·1[a = argmax] + ε/|A|, exactly what the
decision log needs (columns.PROPENSITY) for the next version's off-policy training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pydantic

from adray.bounds import MAX_MONEY, feature, money
from adray.workload import Policy, epsilon_greedy
from workloads.drlput import columns as C
from workloads.drlput.actions import ActionSpace
from workloads.drlput.config import PARAMS, ActionConfig
from workloads.drlput.evaluate import action_probs


def _request_model() -> type[pydantic.BaseModel]:
    fields: dict[str, Any] = {"request_id": (str, "")}
    for name, card in C.CAT_FEATURES.items():
        fields[name] = (int, pydantic.Field(ge=0, lt=card))
    for name in C.NUM_FEATURES:  # the model reads float32; a spend is money (adray.bounds)
        fields[name] = ((money(MAX_MONEY, "advertiser spend per impression shown to the user", positive=False)
                         if name == "hist_spend" else feature(f"{name} (float32)")), ...)
    return pydantic.create_model("UtilityRequest", __config__=pydantic.ConfigDict(extra="forbid"), **fields)


def _response_model() -> type[pydantic.BaseModel]:
    fields: dict[str, Any] = {"request_id": (str, ""), "action": (int, ...), "propensity": (float, ...),
                              "model": (str, ...)}
    fields.update({p: (float, ...) for p in PARAMS})
    return pydantic.create_model("UtilityResponse", **fields)


UtilityRequest = _request_model()
UtilityResponse = _response_model()


class UtilityPolicy(Policy):
    """DRL-PUT as the serving graph's utility stage (model: the inference DRLPUTModule)."""

    route = "utility"
    summary = "utility weights and reserve for one ad request (DRL-PUT)"

    def __init__(self, model: Any, cfg: Any, meta: dict[str, Any], ref: str) -> None:
        super().__init__(model, cfg, meta, ref)
        self.space = ActionSpace(ActionConfig.from_dict(meta["action"]) if "action" in meta else cfg.action)
        self.epsilon = float(getattr(cfg, "serve_epsilon", 0.0))

    @classmethod
    def request_schema(cls, meta: dict[str, Any], max_items: int) -> type[Any]:
        return UtilityRequest

    @classmethod
    def response_schema(cls, meta: dict[str, Any]) -> type[Any]:
        return UtilityResponse

    def decide(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        if not requests:
            return []
        obs = np.array([[r[c] for c in C.STATE] for r in requests], np.float32)  # (B, len(STATE))
        greedy = action_probs(self.model, obs).argmax(1)  # (B,)
        size, eps = self.space.size, self.epsilon
        out = []
        for r, g in zip(requests, greedy):
            a, prop = epsilon_greedy(int(g), r.get("request_id", ""), size, eps)
            vals = self.space.values[a]
            out.append({"request_id": r.get("request_id", ""), "action": a, "propensity": prop, "model": self.ref,
                        **{p: float(vals[i]) for i, p in enumerate(PARAMS)}})
        return out

    # ------------------------------------------------------------------ the graph's decision log
    @classmethod
    def log_fields(cls) -> list[pa.Field]:
        """Arrow fields of the utility stage's columns in a decision log (``columns.LOG_COLUMNS``)."""
        out = [pa.field(c, pa.int32()) for c in C.CAT_FEATURES] + [pa.field(c, pa.float64()) for c in C.NUM_FEATURES]
        out += [pa.field(C.REQUEST_ID, pa.string(), nullable=False), pa.field(C.ACTION, pa.int32()),
                pa.field(C.PROPENSITY, pa.float64()), pa.field(C.POLICY_ID, pa.string()),
                pa.field(C.MODEL_VERSIONS, pa.string())]
        out += [pa.field(c, pa.float64()) for c in C.PARAM_COLUMNS]
        out += [pa.field(C.CAMPAIGN, pa.int32()), pa.field(C.BID, pa.float64())]
        out += [pa.field(c, pa.float64()) for c in (C.REVENUE, C.CLICK, C.LONG_CLICK, C.CONV)]
        out += [pa.field(c, pa.float64()) for c in (C.PRED_CLICK, C.PRED_LONG, C.PRED_CONV)]
        return out

    @classmethod
    def log_values(cls, request_id: str, state: dict[str, Any], decision: dict[str, Any] | None,
                   values: dict[str, float], policy_id: str, model_versions: str,
                   shown: dict[str, Any] | None) -> dict[str, Any]:
        """One decision-log row's utility columns. ``decision``: action and propensity (None: the
        stage fell back); ``shown``: the top shown ad's ``campaign`` code (0 click, 1 conversion),
        ``bid`` and predictions ``pred_click``, ``pred_long``, ``pred_conv`` (None: organic, -1).
        The outcome columns stay null: they are joined later from the events."""
        row: dict[str, Any] = {c: state.get(c) for c in C.STATE}
        row.update({C.REQUEST_ID: request_id, C.ACTION: decision["action"] if decision else None,
                    C.PROPENSITY: decision["propensity"] if decision else None, C.POLICY_ID: policy_id,
                    C.MODEL_VERSIONS: model_versions, **{p: values[p] for p in C.PARAM_COLUMNS}})
        if shown is None:
            row.update({C.CAMPAIGN: -1, C.BID: 0.0, C.PRED_CLICK: 0.0, C.PRED_LONG: 0.0, C.PRED_CONV: 0.0})
        else:
            row.update({C.CAMPAIGN: int(shown["campaign"]), C.BID: float(shown["bid"]),
                        **{c: float(shown[c]) for c in (C.PRED_CLICK, C.PRED_LONG, C.PRED_CONV)}})
        return row

    @classmethod
    def sample_requests(cls, cfg: Any, data_dir: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
        from workloads.drlput.data import read_split

        df = read_split(cfg, data_dir, "val", (C.REQUEST_ID, *C.STATE))
        rows = df.sample(n=min(n, len(df)), random_state=seed, replace=n > len(df))
        return [{"request_id": str(r[C.REQUEST_ID]),
                 **{c: (int(r[c]) if c in C.CAT_FEATURES else float(r[c])) for c in C.STATE}}
                for _, r in rows.iterrows()]
