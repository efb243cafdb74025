"""The FastAPI ingress: validates a ranking request against the model's features, asks Ranking.

Routes: ``POST /v1/rank`` (RankRequest -> RankResponse), ``GET /v1/model``, ``GET /healthz``;
OpenAPI at ``/docs`` and ``/openapi.json``. The FastAPI app is built in the replica
(``__serve_build_asgi_app__``) because its request schema is generated from the FeatureMap.
"""

# No `from __future__ import annotations`: FastAPI must see the generated RankRequest class, not
# the string "RankRequest", in the route's signature.
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from adray.data import FeatureMap
from adray.serving import BodyLimit, RankResponse, columns_of, request_schema, response_of


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256, graceful_shutdown_timeout_s=20)
@serve.ingress()
class Ingress:
    def __init__(self, ranking: DeploymentHandle, model_ref: str, feature_map: dict[str, Any],
                 max_candidates: int, max_body_bytes: int) -> None:
        self.ranking = ranking
        self.model_ref = model_ref
        self.feature_map = FeatureMap.from_dict(feature_map)
        self.max_candidates = max_candidates
        self.max_body_bytes = max_body_bytes

    def __serve_build_asgi_app__(self) -> Any:
        fm, ranking = self.feature_map, self.ranking
        RankRequest = request_schema(fm, self.max_candidates)  # noqa: N806 (a class)
        api = FastAPI(
            title="adray ranking",
            version="1",
            description=f"pCTR / pCVR / pCTCVR of candidate ads; model {self.model_ref}; "
            f"at most {self.max_candidates} candidates and {self.max_body_bytes} bytes per request.",
        )

        @api.exception_handler(RequestValidationError)
        async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
            # FastAPI's default echoes the whole offending input (up to the full body); the field
            # path and the message (which states any limit) are what a client needs.
            errors = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]
            return JSONResponse(status_code=422, content={"detail": errors})

        @api.post("/v1/rank", response_model=RankResponse)
        async def rank(req: RankRequest) -> RankResponse:  # type: ignore[valid-type]
            if not req.candidates:
                return RankResponse(request_id=req.request_id, model=self.model_ref, scores=[])
            scored = await ranking.score.remote(columns_of(req.candidates, fm))
            return response_of(req.request_id, [c.ad_id for c in req.candidates], scored)

        @api.get("/v1/model")
        async def model() -> dict[str, Any]:
            return {"model": self.model_ref, "feature_map": fm.to_dict(),
                    "max_candidates": self.max_candidates, "max_body_bytes": self.max_body_bytes}

        @api.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        return BodyLimit(api, self.max_body_bytes)
