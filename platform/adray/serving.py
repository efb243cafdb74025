"""Shared Serve helpers: resolve a model in the registry, request/response schemas, scoring.

The ranking deployment (``serve_apps/ranking.py``) and offline prediction call the same
:class:`Scorer`: candidates -> ``FeatureMap.arrays`` -> ``model(x_cat, x_num)`` -> probabilities.
The request schema is generated from the model's FeatureMap, so a missing or mistyped feature is
a 422 naming ``candidates.<i>.<feature>`` and the OpenAPI page lists the exact features.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydantic
import torch

from adray.data import FeatureMap
from adray.models import META_FILE, LoadedModel, load_model
from adray.paths import registry_root
from adray.registry import ModelVersion, Registry, RegistryError

APP_NAME = "adray"
MAX_CANDIDATES = 500
"""Candidates per request; more is a 422 stating the limit."""
MAX_BODY_BYTES = 1 << 20
"""Request body size; more is a 413 stating the limit."""
TASKS = ("ctr", "cvr", "ctcvr")


class ServeError(RuntimeError):
    """A deployment that cannot start (unknown model, bad options); the message says why."""


# --------------------------------------------------------------------------- the model


def resolve_model(ref: str, registry: str | Path | None = None) -> ModelVersion:
    """The concrete version behind ``ref`` (``@latest`` pinned), or a ServeError listing what exists.

    Pinning matters: every replica must load the same version even if ``latest`` moves later.
    """
    reg = Registry(registry)
    try:
        mv = reg.get(ref)
    except RegistryError as exc:
        available = [m.ref for m in reg.list()]
        raise ServeError(f"{exc}. Published models: {available or 'none'} (registry {reg.root})") from None
    if "feature_map" not in _meta(mv):
        raise ServeError(f"model {mv.ref} has no feature_map in {mv.path / META_FILE}; not a ranking model")
    return mv


def _meta(mv: ModelVersion) -> dict[str, Any]:
    path = mv.path / META_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def feature_map_of(mv: ModelVersion) -> FeatureMap:
    return FeatureMap.from_dict(_meta(mv)["feature_map"])


class Scorer:
    """pCTR/pCVR/pCTCVR of candidate rows; the one scoring path for Serve and offline prediction."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.ref = loaded.version.ref
        self.feature_map = FeatureMap.from_dict(loaded.meta["feature_map"])

    def score_arrays(self, x_cat: np.ndarray, x_num: np.ndarray) -> dict[str, np.ndarray | None]:
        """``x_cat`` (B, C) int64, ``x_num`` (B, D) float32 -> ``{task: (B,) float32 or None}``."""
        with torch.inference_mode():
            out = self.loaded.model(torch.from_numpy(x_cat), torch.from_numpy(x_num))
        return {t: (out[t].numpy().astype(np.float32) if t in out else None) for t in TASKS}

    def score_frame(self, df: pd.DataFrame, where: str = "request") -> dict[str, np.ndarray | None]:
        arrays = self.feature_map.arrays(df, where=where, with_labels=False)
        return self.score_arrays(arrays["x_cat"], arrays["x_num"])

    def score_columns(self, columns: dict[str, list[Any]]) -> dict[str, list[float] | None]:
        """Column lists (as the ingress sends them) -> JSON-able per-task lists."""
        scores = self.score_frame(pd.DataFrame(columns))
        return {t: (v.tolist() if v is not None else None) for t, v in scores.items()}


def predict_offline(ref: str, df: pd.DataFrame, registry: str | Path | None = None) -> dict[str, np.ndarray | None]:
    """Offline prediction of a published model on a DataFrame of candidates (the serving path)."""
    return Scorer(load_model(resolve_model(ref, registry).ref, Registry(registry))).score_frame(df, "offline")


# --------------------------------------------------------------------------- schemas


class AdScore(pydantic.BaseModel):
    ad_id: str
    pctr: float
    pcvr: float | None = pydantic.Field(None, description="null for single-task (CTR-only) models")
    pctcvr: float | None = pydantic.Field(None, description="null for single-task (CTR-only) models")


class RankResponse(pydantic.BaseModel):
    request_id: str | None = None
    model: str = pydantic.Field(description="name@version that scored this request")
    scores: list[AdScore] = pydantic.Field(description="one per candidate, in request order")


def candidate_schema(fm: FeatureMap) -> type[pydantic.BaseModel]:
    """A pydantic model with ``ad_id`` plus one required field per feature of ``fm``."""
    fields: dict[str, Any] = {"ad_id": (str, pydantic.Field(description="the candidate ad"))}
    for f in fm.categorical:
        fields[f.name] = (int, pydantic.Field(description=f"categorical id in [0, {f.vocab_size}); others -> 0"))
    for name in fm.numeric:
        fields[name] = (float, pydantic.Field(allow_inf_nan=False, description="numeric feature"))
    return pydantic.create_model(
        "Candidate", __config__=pydantic.ConfigDict(extra="forbid"), **fields
    )


def request_schema(fm: FeatureMap, max_candidates: int = MAX_CANDIDATES) -> type[pydantic.BaseModel]:
    candidate = candidate_schema(fm)
    return pydantic.create_model(
        "RankRequest",
        __config__=pydantic.ConfigDict(extra="forbid"),
        request_id=(str | None, None),
        candidates=(
            list[candidate],  # type: ignore[valid-type]
            pydantic.Field(max_length=max_candidates, description=f"at most {max_candidates} ads"),
        ),
    )


def columns_of(candidates: list[pydantic.BaseModel], fm: FeatureMap) -> dict[str, list[Any]]:
    """Validated candidates -> ``{feature: [values]}`` (compact to ship to the ranking replica)."""
    names = fm.categorical_names + list(fm.numeric)
    return {n: [getattr(c, n) for c in candidates] for n in names}


def response_of(request_id: str | None, ad_ids: list[str], scored: dict[str, Any]) -> RankResponse:
    pcvr, pctcvr = scored.get("cvr"), scored.get("ctcvr")
    return RankResponse(
        request_id=request_id,
        model=scored["model"],
        scores=[
            AdScore(
                ad_id=a,
                pctr=scored["ctr"][i],
                pcvr=pcvr[i] if pcvr is not None else None,
                pctcvr=pctcvr[i] if pctcvr is not None else None,
            )
            for i, a in enumerate(ad_ids)
        ],
    )


# --------------------------------------------------------------------------- request size


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` is a 413 stating the limit (before parsing)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and int(length) > self.max_bytes:
            return await self._reject(send, int(length))
        seen, over = 0, False

        async def counted() -> dict:
            # Past the limit the app is told the client left (it stops reading), and we answer.
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                over = True
                return {"type": "http.disconnect"}
            return message

        started = False

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if over:
                return  # the app's reaction to the "disconnect" is replaced by the 413 below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._reject(send, seen)

    async def _reject(self, send: Any, size: int) -> None:
        body = json.dumps(
            {"detail": f"request body of {size} bytes exceeds the limit of {self.max_bytes} bytes"}
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- deploy options


def default_registry() -> str:
    """The registry path replicas should read (absolute; from ADRAY_REGISTRY / ADRAY_HOME)."""
    return str(registry_root())
