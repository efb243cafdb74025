"""The bidding policy: one advertiser at one step -> bid coefficient alpha (``POST /v1/bid``).

A request carries what the advertiser's auto-bidding agent knows at step t: its task and CPA
constraint, its AuctionNet states of the steps so far (the last one is step t), and for the earlier
steps the alpha it bid and the conversions it got. The policy rebuilds the network's window exactly
as training does (:func:`window`) — the same function the simulator-side :class:`ModelBidder` calls,
so an HTTP answer equals the alpha the evaluation bids. The return-to-go starts at the model's
target for the task (``target_return`` x the 90th percentile of the task's logged returns) and
falls by the conversions so far (a request may set ``return_to_go`` itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pydantic
import torch

from adray.bounds import MAX_CPA, feature, money
from adray.workload import Policy
from workloads.vamo.config import STATE_DIM, TASKS
from workloads.vamo.data import load_split
from workloads.vamo.sim import DayLog, DayResult
from workloads.vamo.trajectory import state_features

MAX_ALPHA_RATIO = 10.0  # alpha / CPA is clipped to [0, 10]


def window(states: np.ndarray, alphas: np.ndarray, conversions: np.ndarray, cpa: float, task: int,
           rtg0: float, model: Any, unit: float = 1.0) -> dict[str, torch.Tensor]:
    """The network's inputs for the last step of ``states`` (t+1, 16); ``alphas`` and
    ``conversions`` (t,) of the earlier steps (``rtg0`` in conversions; ``unit``: what the model
    counts returns in, :func:`rtg_unit`). Step indices come from the timeleft feature."""
    meta, cfg = model.meta, model.cfg
    length, hist = cfg.context, cfg.history
    n = len(states)
    t_now = int(round(meta["steps_per_day"] * (1.0 - float(states[-1][0]))))  # timeleft = (T - t) / T
    ext = np.zeros((length + hist, STATE_DIM), np.float32)
    ext_valid = np.zeros(length + hist, bool)
    k = min(n, length + hist)
    ext[-k:], ext_valid[-k:] = states[-k:], True
    ratio = np.concatenate([[0.0], np.asarray(alphas, float) / cpa])  # a_{p-1} for p = 0..t
    rtg = rtg0 - np.concatenate([[0.0], np.cumsum(conversions)])  # return-to-go at each step
    prev, ret = np.zeros(length, np.float32), np.zeros(length, np.float32)
    k = min(n, length)
    prev[-k:], ret[-k:] = ratio[-k:], np.maximum(rtg[-k:], 0.0) / (meta["rtg_scale"] * unit)
    steps = np.maximum(t_now - np.arange(length)[::-1], 0)
    return {"ext": torch.from_numpy(ext[None]), "ext_valid": torch.from_numpy(ext_valid[None]),
            "prev_action": torch.from_numpy(prev[None]), "rtg": torch.from_numpy(ret[None]),
            "step": torch.from_numpy(np.minimum(steps, meta["max_steps"] - 1)[None].astype(np.int64)),
            "task": torch.tensor([task])}


@torch.inference_mode()
def alphas(model: Any, batch: dict[str, torch.Tensor], cpa: np.ndarray) -> np.ndarray:
    """alpha of the last position of each window (all windows of one network)."""
    net = model.net_for(int(batch["task"][0]))
    out = net(batch["ext"], batch["ext_valid"], batch["prev_action"], batch["rtg"], batch["step"], batch["task"])
    return np.clip(out[:, -1].double().numpy(), 0.0, MAX_ALPHA_RATIO) * np.asarray(cpa, float)


def model_tasks(meta: dict[str, Any]) -> tuple[str, ...]:
    """The tasks a model was trained for, index = task id (its meta holds one return target per task)."""
    return TASKS[: len(meta.get("rtg_target", TASKS))]


def task_field(meta: dict[str, Any]) -> tuple[Any, Any]:
    """The ``task`` field of a request to this model: an int in ``[0, len(model_tasks(meta)))``, or a
    422 naming the field and that range (a task past it has no head, return target nor history)."""
    names = model_tasks(meta)
    known = ", ".join(f"{i} = {t}" for i, t in enumerate(names))

    def check(task: int) -> int:
        if not 0 <= task < len(names):
            raise ValueError(f"task {task} is outside the bidding model's tasks 0..{len(names) - 1} ({known})")
        return task

    return (Annotated[int, pydantic.AfterValidator(check)],
            pydantic.Field(description=f"bidding task, one of the bidding model's: {known}",
                           json_schema_extra={"minimum": 0, "maximum": len(names) - 1}))


def rtg_unit(model: Any, budget: float | None, cpa: float) -> float:
    """What the model counts returns in for this advertiser: 1, or with ``rtg_norm: capacity`` its
    budget / CPA constraint (then the budget is required)."""
    if model.meta.get("rtg_norm", "none") != "capacity":
        return 1.0
    if budget is None:
        raise ValueError("budget: required by this bidding model (rtg_norm=capacity: its return target is "
                         "per unit of budget / CPA constraint)")
    return float(budget) / float(cpa)


def rtg_start(model: Any, task: int, unit: float = 1.0) -> float:
    """The starting return-to-go, in conversions: the task's target multiple (``task_targets``, else
    ``target_return``) x the task's logged target x unit."""
    multiple = model.cfg.task_targets[task] if model.cfg.task_targets else model.cfg.target_return
    return float(multiple * model.meta["rtg_target"][task] * unit)


class ModelBidder:
    """A trained model bidding in the simulator for the advertisers it controls."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def start(self, result: DayResult, idx: np.ndarray) -> None:
        day = result.day
        self.unit = np.array([rtg_unit(self.model, float(day.budget[j]), float(day.cpa[j])) for j in idx])
        self.rtg0 = np.array([rtg_start(self.model, int(result.adv.task[j]), u) for j, u in zip(idx, self.unit)])

    def act(self, t: int, result: DayResult, idx: np.ndarray) -> np.ndarray:
        log, day, adv = result.log, result.day, result.adv
        states = state_features(log, day.budget, upto=t)  # (t+1, N, 16)
        batches = [window(states[:, j], log.alpha[:t, j], log.conversions[:t, j], float(day.cpa[j]),
                          int(adv.task[j]), float(self.rtg0[i]), self.model, float(self.unit[i]))
                   for i, j in enumerate(idx)]
        out = np.zeros(len(idx))
        groups = adv.task[idx] if len(self.model.nets) > 1 else np.zeros(len(idx), int)
        for g in np.unique(groups):  # one forward per network
            sel = np.flatnonzero(groups == g)
            b = {k: torch.cat([batches[i][k] for i in sel]) for k in batches[0]}
            out[sel] = alphas(self.model, b, day.cpa[idx[sel]])
        return out


def bid_request(history: dict[str, Sequence[float]], budget: float, cpa: float, task: int, steps: int,
                request_id: str | None = None) -> dict[str, Any]:
    """A ``/v1/bid`` request from an advertiser's pacing aggregates (the serving graph's ledger).

    ``history`` holds, per step 0..t of the day (t = the current step, its entry what happened so
    far in it): ``rows`` (auctions entered), ``bid_sum``, ``pvalue_sum``, ``wins``, ``cost``,
    ``conversions`` (expected), ``lwc_sum``, ``alpha``. The states are :func:`state_features` of a
    one-advertiser :class:`DayLog` of ``steps`` steps, as the simulator's trajectories are made, with
    one difference: the simulator's rows and least winning cost are the market's, here they are
    the auctions this advertiser entered (what the graph sees of the market).
    """
    n = len(history["rows"])
    if not 1 <= n <= steps:
        raise ValueError(f"history has {n} steps; expected 1..{steps} (steps per day)")
    log = DayLog.empty(steps, 1)
    for name in ("cost", "wins", "conversions", "bid_sum", "pvalue_sum", "alpha"):
        getattr(log, name)[:n, 0] = history[name]
    log.rows[:n] = history["rows"]
    log.lwc_sum[:n] = history["lwc_sum"]
    spent_before = np.concatenate([[0.0], np.cumsum(log.cost[: n - 1, 0])])
    log.remaining[:n, 0] = np.maximum(budget - spent_before, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # a step with no auction yet: its means are 0
        states = np.nan_to_num(state_features(log, np.array([budget]), upto=n - 1)[:, 0], posinf=0.0)  # (t+1, 16)
    t = n - 1
    return {"request_id": request_id, "task": int(task), "cpa_constraint": float(cpa),
            "states": states.astype(float).tolist(), "alphas": log.alpha[:t, 0].astype(float).tolist(),
            "conversions": log.conversions[:t, 0].astype(float).tolist(),
            **({"budget": float(budget)} if budget > 0 else {})}  # a model with rtg_norm=capacity needs it


class BidResponse(pydantic.BaseModel):
    request_id: str | None = None
    model: str = pydantic.Field(description="name@version that decided")
    alpha: float = pydantic.Field(description="bid coefficient: bid = alpha x pValue for this step")
    ratio: float = pydantic.Field(description="alpha / CPA constraint")


class BidPolicy(Policy):
    route = "bid"
    summary = "bid coefficient of one advertiser at one decision step"

    pacing_request = staticmethod(bid_request)
    """The serving graph's hook: a request of this policy from an advertiser's pacing aggregates."""
    task_names = staticmethod(model_tasks)
    """The serving graph's hook: the tasks a model (its meta) knows; a request's ``task`` indexes them."""

    @classmethod
    def request_schema(cls, meta: dict[str, Any], max_items: int) -> type[pydantic.BaseModel]:
        state = pydantic.conlist(feature("AuctionNet state feature (float32)"), min_length=STATE_DIM,
                                 max_length=STATE_DIM)
        steps = int(meta.get("max_steps", 96))

        def consistent(self: Any) -> Any:
            for name in ("alphas", "conversions"):
                if len(getattr(self, name)) != len(self.states) - 1:
                    raise ValueError(f"{name}: expected {len(self.states) - 1} values (one per earlier step: "
                                     f"len(states) - 1), got {len(getattr(self, name))}")
            return self

        return pydantic.create_model(
            "BidRequest",
            __config__=pydantic.ConfigDict(extra="forbid"),
            __validators__={"consistent": pydantic.model_validator(mode="after")(consistent)},
            request_id=(str | None, None),
            task=task_field(meta),
            cpa_constraint=(money(MAX_CPA, "target cost per conversion"), ...),
            states=(list[state], pydantic.Field(  # type: ignore[valid-type]
                min_length=1, max_length=steps,
                description=f"AuctionNet states ({STATE_DIM} floats) of the steps so far; the last is now")),
            alphas=(list[pydantic.confloat(ge=0, allow_inf_nan=False)], pydantic.Field(  # type: ignore[valid-type]
                description="alpha bid at each earlier step")),
            conversions=(list[pydantic.confloat(ge=0, allow_inf_nan=False)], pydantic.Field(  # type: ignore[valid-type]
                description="conversions of each earlier step")),
            return_to_go=(float | None, pydantic.Field(None, description="target return left (default: the "
                                                                          "model's target minus conversions)")),
            budget=(money(1e12, "the advertiser's budget of the day") | None, pydantic.Field(
                None, description="the day's budget (required by a model with rtg_norm=capacity)")),
        )

    @classmethod
    def response_schema(cls, meta: dict[str, Any]) -> type[pydantic.BaseModel]:
        return BidResponse

    def decide(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One forward pass per network over the requests it serves (Serve passes one at a time;
        the feed graph passes all advertisers of a feed request)."""
        windows, cpas = [], np.zeros(len(requests))
        for i, r in enumerate(requests):
            task, cpas[i] = int(r["task"]), float(r["cpa_constraint"])
            unit = rtg_unit(self.model, r.get("budget"), cpas[i])
            rtg0 = rtg_start(self.model, task, unit)
            if r.get("return_to_go") is not None:  # the caller's target for now: back to step 0
                rtg0 = float(r["return_to_go"]) + float(np.sum(r["conversions"]))
            windows.append(window(np.asarray(r["states"], np.float32), np.asarray(r["alphas"]),
                                  np.asarray(r["conversions"]), cpas[i], task, rtg0, self.model, unit))
        out_alpha = np.zeros(len(requests))
        tasks = np.array([int(r["task"]) for r in requests])
        groups = tasks if len(self.model.nets) > 1 else np.zeros(len(requests), int)
        for g in np.unique(groups):  # one forward per network
            sel = np.flatnonzero(groups == g)
            b = {k: torch.cat([windows[i][k] for i in sel]) for k in windows[0]}
            out_alpha[sel] = alphas(self.model, b, cpas[sel])
        return [{"request_id": r.get("request_id"), "model": self.ref, "alpha": float(a), "ratio": float(a / c)}
                for r, a, c in zip(requests, out_alpha, cpas, strict=True)]

    @classmethod
    def sample_requests(cls, cfg: Any, data_dir: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
        """Advertiser-steps of the validation day (alphas and conversions as logged)."""
        from adray.data import read_dataset

        a = load_split(data_dir, "val")
        val = read_dataset(data_dir).read("val")
        conv = np.zeros_like(a["action"])
        key = val["period"].to_numpy() * 1_000_000 + val["advertiser"].to_numpy()
        _, inv = np.unique(key, return_inverse=True)
        conv[inv, val["step"].to_numpy()] = val["reward"].to_numpy()
        rng = np.random.default_rng(seed)
        out = []
        for i in range(n):
            m = int(rng.integers(len(a["task"])))
            t = int(rng.integers(a["length"][m]))
            out.append({"request_id": f"b{i}", "task": int(a["task"][m]), "cpa_constraint": float(a["cpa"][m]),
                        "states": a["states"][m, : t + 1].astype(float).tolist(),  # the day so far
                        "alphas": (a["action"][m, :t] * a["cpa"][m]).astype(float).tolist(),
                        "conversions": conv[m, :t].astype(float).tolist()})
        return out
