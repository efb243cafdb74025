"""Request and answer of ``POST /v1/feed``, generated from the five stages' own request schemas.

The five models were trained on five different (simulated or public) worlds, so a feed request
carries, for each stage, the features that stage's model was trained on, in that model's own
typed form (copied from its policy's schema, so a wrong field is a 422 naming
``ads.3.features.user_id`` or ``user.utility_state.hour`` exactly as the stage's own route would):

* ``ads[i].features``: the ranking model's candidate features (pwiser's FeatureMap);
* ``ads[i].content`` / ``value`` and ``organic[j]``: the allocation model's item features
  (Cross DQN: content vector, value); ``user.profile``, ``user.history``, ``screen``: its user
  and screen blocks;
* ``user.utility_state``: the utility model's request state (DRL-PUT's columns.STATE);
* ``user.journey``: the channel model's journey (MTORL: states, channels, gains, costs), optional;
* ``ads[i].auto``: an auto-bidding ad's advertiser settings (daily budget, CPA constraint, task);
  the bidding model's state is the advertiser's pacing state, which the graph keeps.

A stage that is not deployed still shapes the request when its model's meta is known; without it
the block is accepted as free-form (the stage falls back to its default anyway).
"""

# No `from __future__ import annotations`: FastAPI must see the generated classes.
from typing import Any, Literal

import pydantic

ROLES = ("ranking", "bidding", "utility", "allocation", "channel")
"""The graph's stages, in the order of DESIGN.md's serving graph."""
ROUTES = {"ranking": "rank", "bidding": "bid", "utility": "utility", "allocation": "allocate", "channel": "channel"}
"""The policy route each stage's model must answer (the workload contract's ``Policy.route``)."""


def stage_workloads() -> dict[str, tuple[str, Any]]:
    """role -> (workload name, policy class) of the one registered workload answering the stage's
    route: the graph binds stages to workloads through the contract, never by name."""
    from adray.workload import get_workload, workload_names

    policies = {name: get_workload(name).policy for name in workload_names()}
    out = {}
    for role, route in ROUTES.items():
        found = [(name, cls) for name, cls in policies.items() if cls.route == route]
        if len(found) != 1:
            raise LookupError(f"{role} stage: {len(found)} registered workloads answer /v1/{route} "
                              f"({[n for n, _ in found]}); expected exactly one")
        out[role] = found[0]
    return out


def _fields(model: type[pydantic.BaseModel], keep: tuple[str, ...] | None = None,
            drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """Field definitions of ``model`` (annotation + FieldInfo), for ``pydantic.create_model``."""
    out = {}
    for name, info in model.model_fields.items():
        if name in drop or (keep is not None and name not in keep):
            continue
        out[name] = (info.annotation, info)
    return out


def _free(description: str) -> Any:
    return (dict[str, Any] | None, pydantic.Field(None, description=description))


def feed_request_schema(schemas: dict[str, type[pydantic.BaseModel] | None], max_items: int) -> type[pydantic.BaseModel]:
    """The FeedRequest model from the stages' request schemas (``None``: stage unknown)."""
    strict = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)
    rank = schemas.get("ranking")
    if rank is not None:
        cand = rank.model_fields["candidates"].annotation.__args__[0]  # list[Candidate]
        features: Any = (pydantic.create_model("AdFeatures", __config__=strict, **_fields(cand, drop=("ad_id",))), ...)
    else:
        features = (dict[str, Any], pydantic.Field(default_factory=dict))
    alloc = schemas.get("allocation")
    if alloc is not None:
        user_alloc = _fields(alloc, keep=("profile", "history"))
        screen: Any = _fields(alloc, keep=("context",))["context"]
    else:
        user_alloc = {"profile": (list[float], pydantic.Field(default_factory=list)),
                      "history": (list[list[float]], pydantic.Field(default_factory=list))}
        screen = (list[float], pydantic.Field(default_factory=list))
    util, chan = schemas.get("utility"), schemas.get("channel")
    auto = pydantic.create_model(
        "AutoBidding", __config__=strict,
        budget=(float, pydantic.Field(gt=0, description="the advertiser's daily budget")),
        cpa_constraint=(float, pydantic.Field(gt=0, description="target cost per conversion")),
        task=(int, pydantic.Field(ge=0, description="bidding task (0 store GMV, 1 direct GMV, 2 cart count)")),
    )

    def one_bid(self: Any) -> Any:
        if self.campaign == "fixed" and self.bid is None:
            raise ValueError("a fixed-bid ad needs bid (its cost-per-click bid)")
        if self.campaign == "auto" and self.auto is None:
            raise ValueError("an auto-bidding ad needs auto (budget, cpa_constraint, task)")
        return self

    ad = pydantic.create_model(
        "FeedAd", __config__=strict,
        __validators__={"one_bid": pydantic.model_validator(mode="after")(one_bid)},
        ad_id=(str, pydantic.Field(min_length=1, max_length=128)),
        advertiser=(str, pydantic.Field(min_length=1, max_length=128)),
        campaign=(Literal["fixed", "auto"], pydantic.Field(description="fixed CPC bid, or auto-bidding")),
        bid=(float | None, pydantic.Field(None, gt=0, description="cost-per-click bid of a fixed-bid ad")),
        auto=(auto | None, None),
        features=features,
        content=(list[float], pydantic.Field(description="the item's content vector (allocation model)")),
        value=(float, pydantic.Field(ge=0, description="the item's value to the user (allocation model)")),
        p_long=(float, pydantic.Field(0.0, ge=0, le=1, description="P(long click) from an external model")),
    )
    organic = pydantic.create_model(
        "FeedOrganic", __config__=strict,
        item_id=(str, pydantic.Field(min_length=1, max_length=128)),
        content=(list[float], ...),
        value=(float, pydantic.Field(ge=0)),
    )
    user = pydantic.create_model(
        "FeedUser", __config__=strict,
        user_id=(str, pydantic.Field(min_length=1, max_length=128)),
        utility_state=(util, ...) if util is not None else _free("the utility model's state"),
        journey=(chan | None, pydantic.Field(None, description="the channel model's journey; none: stage skipped"))
        if chan is not None else _free("the channel model's journey"),
        **user_alloc,
    )
    return pydantic.create_model(
        "FeedRequest", __config__=strict,
        request_id=(str, pydantic.Field(min_length=1, max_length=128)),
        user=(user, ...),
        screen=screen,
        ads=(list[ad], pydantic.Field(min_length=1, max_length=max_items)),  # type: ignore[valid-type]
        organic=(list[organic], pydantic.Field(default_factory=list, max_length=max_items)),  # type: ignore[valid-type]
    )


class FeedSlot(pydantic.BaseModel):
    position: int
    kind: Literal["ad", "organic"]
    id: str
    advertiser: str | None = None
    price: float | None = pydantic.Field(None, description="GSP price charged per impression")
    pctr: float | None = None
    pcvr: float | None = None


class FeedResponse(pydantic.BaseModel):
    request_id: str
    feed: list[FeedSlot] = pydantic.Field(description="the mixed screen, slot by slot")
    utility: dict[str, float] = pydantic.Field(description="w_click, w_long, w_conv, reserve of this request")
    decisions: dict[str, dict[str, Any]] = pydantic.Field(
        description="per stage: its action and the propensity of stochastic decisions")
    bids: dict[str, float] = pydantic.Field(description="alpha of each auto-bidding advertiser")
    models: dict[str, str] = pydantic.Field(description="name@version of each stage that answered")
    fallbacks: dict[str, str] = pydantic.Field(description="stage -> why it fell back to its safe default")
    latency_ms: dict[str, float]
