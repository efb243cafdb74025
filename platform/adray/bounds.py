"""Finite, stated bounds of what a serving request may carry: money, model inputs, ids.

One place for the numbers that the serving schemas (the feed's and each workload's policy's) state
in their field descriptions and OpenAPI page, that the README quotes and that the tests check. A
value outside its bound cannot be true (or cannot reach a model intact) and is a 422 naming the
field at the door; nothing here clips or rounds.

Money is in the ledger's currency unit, the unit of budgets, bids and GSP prices (e.g. dollars,
not micros). The bounds are far above any real advertiser's figures and far below what overflows:
the largest price the graph can compute is about ``MAX_ALPHA_RATIO (10) x MAX_CPA`` per
impression, the largest spend ``MAX_BUDGET`` a day, all exact in float64.

Model inputs are read as float32 by every network; a float past ``FLOAT32_MAX`` would reach the
model as ``inf``. Categorical ids are int64 arrays; an id past int64 cannot be encoded at all
(within int64, an id outside the vocabulary maps to the unknown bucket and is counted).
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic

MAX_BID = 1e4
"""Largest fixed cost-per-click bid (per click)."""
MAX_CPA = 1e6
"""Largest target cost per conversion of an auto-bidding advertiser."""
MAX_BUDGET = 1e9
"""Largest daily budget of one advertiser."""
MAX_MONEY = 1e9
"""Largest amount of any other money field (a step's cost, a spend)."""
FLOAT32_MAX = 3.4028234663852886e38
"""Largest finite float32: the bound of a numeric model input."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""Range of a categorical id (ids are int64 arrays)."""


def money(upper: float, description: str, *, positive: bool = True) -> Any:
    """A finite amount of money in ``(0, upper]`` (``positive``) or ``[0, upper]``."""
    low = {"gt": 0.0} if positive else {"ge": 0.0}
    where = f"{'(0' if positive else '[0'}, {upper:g}]"
    return Annotated[float, pydantic.Field(allow_inf_nan=False, le=upper, **low,  # type: ignore[arg-type]
                                           description=f"{description}; in {where}, ledger currency units")]


FLOAT32_MSG = f"{{x:g}} is past float32 (|x| <= {FLOAT32_MAX:.4g}), what the model reads"
INT64_MSG = ("{x} is not a 64-bit integer id (in [-2**63, 2**63 - 1]); an id outside the vocabulary maps to "
             "the unknown bucket, one past int64 cannot be encoded")


def explain(error: dict[str, Any]) -> str:
    """The message of one pydantic error, with the float32 and int64 bounds of :func:`feature` and
    :func:`category_id` said as what they mean (pydantic's own says "less than or equal to
    340282346638528860000000000000000000000"). The bounds are pydantic's native constraints, checked
    in its Rust core: a Python validator per number cost ~45 us per 1,000 numbers, and a feed
    request carries ~2,000."""
    ctx = error.get("ctx") or {}
    limit = ctx.get("le", ctx.get("ge"))
    if error.get("type") in ("less_than_equal", "greater_than_equal") and limit is not None:
        if isinstance(limit, float) and abs(limit) == FLOAT32_MAX:
            return FLOAT32_MSG.format(x=error.get("input"))
        if isinstance(limit, int) and limit in (INT64_MIN, INT64_MAX):
            return INT64_MSG.format(x=error.get("input"))
    return str(error.get("msg", ""))


def feature(description: str = "numeric feature") -> Any:
    """A finite number a model reads as float32 (``|x| <= FLOAT32_MAX``)."""
    return Annotated[float, pydantic.Field(allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX,
                                           description=description)]


def category_id(description: str) -> Any:
    """A categorical id: any int64 (out-of-vocabulary and negative ids map to the unknown bucket)."""
    return Annotated[int, pydantic.Field(ge=INT64_MIN, le=INT64_MAX, description=description)]
