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
  the bidding model's state is the advertiser's pacing state, which the graph keeps. ``task``
  is the bidding model's own field (its range comes from the model's meta).

A stage that is not deployed still shapes the request when its model's meta is known; without it
the block is accepted as free-form (the stage falls back to its default anyway).

What cannot be true is refused (422) before any stage runs (``adray.bounds`` states the numbers):
money past its bound (``bid`` <= MAX_BID, ``budget`` <= MAX_BUDGET, ``cpa_constraint`` <= MAX_CPA;
all finite and > 0), a model input past float32, a categorical id past int64, a task the bidding
model does not know; and across the request: an ``ad_id`` (or organic ``item_id``) that repeats, a
fixed ad carrying ``auto`` or an auto ad carrying ``bid``, an advertiser with two different budgets,
CPA constraints or tasks. Each message names the field and where (``ads[3].ad_id 'a7' repeats
ads[1]``).
"""

# No `from __future__ import annotations`: FastAPI must see the generated classes.
from typing import Annotated, Any, Literal

import pydantic

from adray.bounds import MAX_BID, MAX_BUDGET, MAX_CPA, feature, money
from adray.dict_schema import on_dicts

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
        user_alloc = {"profile": (list[_F32], pydantic.Field(default_factory=list)),  # type: ignore[valid-type]
                      "history": (list[list[_F32]], pydantic.Field(default_factory=list))}  # type: ignore[valid-type]
        screen = (list[_F32], pydantic.Field(default_factory=list))  # type: ignore[valid-type]
    util, chan, bid = schemas.get("utility"), schemas.get("channel"), schemas.get("bidding")
    auto = pydantic.create_model(
        "AutoBidding", __config__=strict,
        budget=(money(MAX_BUDGET, "the advertiser's daily budget"), ...),
        cpa_constraint=(money(MAX_CPA, "target cost per conversion"), ...),
        task=_fields(bid, keep=("task",))["task"] if bid is not None and "task" in bid.model_fields
        else (int, pydantic.Field(ge=0, lt=2**31, description="bidding task (no bidding model known: any int "
                                                              "in [0, 2**31))")),
    )

    ad = pydantic.create_model(
        "FeedAd", __config__=strict,
        __validators__={"one_bid": pydantic.model_validator(mode="after")(on_dicts(_one_bid))},
        ad_id=(str, pydantic.Field(min_length=1, max_length=128)),
        advertiser=(str, pydantic.Field(min_length=1, max_length=128)),
        campaign=(Literal["fixed", "auto"], pydantic.Field(description="fixed CPC bid, or auto-bidding")),
        bid=(money(MAX_BID, "cost-per-click bid of a fixed-bid ad") | None, None),
        auto=(auto | None, None),
        features=features,
        content=(list[_F32], pydantic.Field(  # type: ignore[valid-type]
            description="the item's content vector (allocation model)")),
        value=(_VALUE, ...),
        p_long=(float, pydantic.Field(0.0, ge=0, le=1, description="P(long click) from an external model")),
    )
    organic = pydantic.create_model(
        "FeedOrganic", __config__=strict,
        item_id=(str, pydantic.Field(min_length=1, max_length=128)),
        content=(list[_F32], ...),  # type: ignore[valid-type]
        value=(_VALUE, ...),
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
        __validators__={"distinct_ads": pydantic.field_validator("ads")(on_dicts(_distinct_ads)),
                        "distinct_organic": pydantic.field_validator("organic")(on_dicts(_distinct_organic))},
        request_id=(str, pydantic.Field(min_length=1, max_length=128)),
        user=(user, ...),
        screen=screen,
        ads=(list[ad], pydantic.Field(min_length=1, max_length=max_items)),  # type: ignore[valid-type]
        organic=(list[organic], pydantic.Field(default_factory=list, max_length=max_items)),  # type: ignore[valid-type]
    )


_F32 = feature("model input (float32)")
_VALUE = Annotated[feature("the item's value to the user (allocation model)"), pydantic.Field(ge=0)]
AUTO_SETTINGS = ("budget", "cpa_constraint", "task")
"""An auto-bidding advertiser's settings: one value each per request (the ledger keeps one per day)."""


def _one_bid(ad: dict[str, Any]) -> None:
    if ad["campaign"] == "fixed" and ad["bid"] is None:
        raise ValueError("a fixed-bid ad needs bid (its cost-per-click bid)")
    if ad["campaign"] == "fixed" and ad["auto"] is not None:
        raise ValueError("a fixed-bid ad carries auto: auto-bidding settings belong to campaign 'auto' "
                         "(drop auto, or make the ad campaign 'fixed' without bid)")
    if ad["campaign"] == "auto" and ad["auto"] is None:
        raise ValueError("an auto-bidding ad needs auto (budget, cpa_constraint, task)")
    if ad["campaign"] == "auto" and ad["bid"] is not None:
        raise ValueError("an auto-bidding ad carries bid: the bidding model sets its bid (drop bid, or make "
                         "the ad campaign 'fixed' without auto)")


def _distinct_ads(ads: list[dict[str, Any]]) -> None:
    """Each ``ad_id`` once; per advertiser one budget, CPA constraint and task (auto ads)."""
    problems, first, settings = [], {}, {}
    for i, ad in enumerate(ads):
        if (j := first.setdefault(ad["ad_id"], i)) != i:
            problems.append(f"ads[{i}].ad_id {ad['ad_id']!r} repeats ads[{j}]")
        auto = ad["auto"]
        if auto is None:
            continue
        j, seen = settings.setdefault(ad["advertiser"], (i, auto))
        for name in AUTO_SETTINGS:
            if auto[name] != seen[name]:
                problems.append(f"ads[{i}].auto.{name} {auto[name]!r} differs from ads[{j}].auto.{name} "
                                f"{seen[name]!r} of the same advertiser {ad['advertiser']!r} (one {name} per "
                                f"advertiser)")
    _refuse(problems)


def _distinct_organic(items: list[dict[str, Any]]) -> None:
    first: dict[str, int] = {}
    _refuse([f"organic[{i}].item_id {o['item_id']!r} repeats organic[{first[o['item_id']]}]"
             for i, o in enumerate(items) if first.setdefault(o["item_id"], i) != i])


def _refuse(problems: list[str]) -> None:
    if problems:
        raise ValueError("; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else ""))


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
    fallbacks: dict[str, str] = pydantic.Field(
        description="stage -> why it fell back to its safe default; ``bidding:<advertiser>`` / "
                    "``pacing:<advertiser>``: one advertiser's fallback (the others were decided by the model)")
    diagnostics: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="counts of what the stages mapped or repaired: ``out_of_vocab`` "
                                          "{stage.feature: ids outside the model's vocabulary, scored as unknown}")
    latency_ms: dict[str, float]
