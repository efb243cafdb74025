"""The FastAPI ingress: validates a request against the policy's schema, asks the policy deployment.

Routes: ``POST /v1/<route>`` (the policy's route: ``rank``, ``channel``, ``allocate``, ...; request
and response typed by the policy), ``GET /v1/model``, ``GET /healthz``; OpenAPI at ``/docs`` and
``/openapi.json``. The FastAPI app is built in the replica (``__serve_build_asgi_app__``) because
the schemas are generated from the model's meta.
"""

# No `from __future__ import annotations`: FastAPI must see the generated request class, not a
# string, in the route's signature.
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from adray.bounds import explain
from adray.serving import BodyLimit
from adray.workload import get_workload


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256, graceful_shutdown_timeout_s=20)
@serve.ingress()
class Ingress:
    def __init__(self, policy: DeploymentHandle, workload: str, model_ref: str, meta: dict[str, Any],
                 max_items: int, max_body_bytes: int) -> None:
        self.policy = policy
        self.policy_cls = get_workload(workload).policy
        self.workload, self.model_ref, self.meta = workload, model_ref, meta
        self.max_items, self.max_body_bytes = max_items, max_body_bytes

    def __serve_build_asgi_app__(self) -> Any:
        cls, policy = self.policy_cls, self.policy
        Request_ = cls.request_schema(self.meta, self.max_items)  # noqa: N806 (a class)
        Response_ = cls.response_schema(self.meta)  # noqa: N806
        api = FastAPI(
            title=f"adray {self.workload}",
            version="1",
            description=f"{cls.summary or cls.route}; model {self.model_ref}; at most {self.max_items} "
            f"items per list and {self.max_body_bytes} bytes per request.",
        )

        @api.exception_handler(RequestValidationError)
        async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
            # FastAPI's default echoes the whole offending input (up to the full body); the field
            # path and the message (which states any limit) are what a client needs.
            errors = [{"type": e.get("type"), "loc": e.get("loc"), "msg": explain(e)} for e in exc.errors()]
            return JSONResponse(status_code=422, content={"detail": errors})

        async def decide(req: Request_) -> Response_:  # type: ignore[valid-type]
            return await policy.decide.remote(req.model_dump())  # type: ignore[attr-defined]

        api.add_api_route(f"/v1/{cls.route}", decide, methods=["POST"], response_model=Response_,
                          summary=cls.summary or None)

        @api.get("/v1/model")
        async def model() -> dict[str, Any]:
            return {"model": self.model_ref, "workload": self.workload, "route": f"/v1/{cls.route}",
                    "meta": self.meta, "max_items": self.max_items, "max_body_bytes": self.max_body_bytes}

        @api.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        return BodyLimit(api, self.max_body_bytes)
