"""The FeedIngress deployment: validates ``POST /v1/feed``, runs the graph, appends the decision log.

Routes: ``POST /v1/feed``, ``GET /v1/graph`` (models, settings, decision-log counters),
``GET /healthz``; OpenAPI at ``/docs``. A request that does not validate is a 422 naming the field
(the stages' own schemas are nested in the FeedRequest); a body over the limit is a 413; a request
the replica cannot answer by its deadline is shed with a 503 and Retry-After before its body is read
(``serve_apps.feed_admission``). ``/v1/graph`` also reports the admission limit in force, the
event loop's lag, the shed counts and the mean stage batch.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import asyncio
import dataclasses
import functools
import gc
import json
import time
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve

from adray.bounds import explain
from adray.dict_schema import dict_adapter
from adray.serving import BodyLimit
from serve_apps.feed_admission import DEADLINE_KEY, Admission
from serve_apps.feed_batching import LocalStage, Waves
from serve_apps.feed_graph import FeedGraph, GraphSettings
from serve_apps.feed_log import log_schema
from serve_apps.feed_metrics import AdvertiserTags, FeedMetrics, MetricsPump
from serve_apps.feed_schema import FeedResponse, feed_request_schema, stage_workloads


class RemoteStage:
    """A stage deployment (serve_apps.policy.PolicyDeployment) behind a DeploymentHandle."""

    def __init__(self, handle: Any, ref: str) -> None:
        self.handle, self.ref = handle, ref

    async def decide(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*[self.handle.decide.remote(r) for r in requests]))


class ActorLedger:
    """The pacing ledger actor (adray.pacing) as the graph calls it.

    The settles made in one turn of the loop (the requests of one wave, ``feed_batching.Waves``)
    go in one actor call (``settle_many``): one round trip and one actor task instead of one per
    request. A settle whose caller is gone before it is sent is not sent (the graph voids its key
    all the same, which leaves a tombstone); one sent is voided after it, in the caller's order,
    as before.
    """

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self._settles: list[tuple[list[dict[str, Any]], str | None, asyncio.Future[list[bool]]]] = []
        self._flush: asyncio.Handle | None = None
        self._sent: set[asyncio.Task[None]] = set()

    async def views(self, specs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return await self.actor.views.remote(specs)

    async def settle(self, events: list[dict[str, Any]], key: str | None = None) -> list[bool]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[bool]] = loop.create_future()
        self._settles.append((events, key, fut))
        if self._flush is None:
            self._flush = loop.call_soon(self._send)
        return await fut

    def _send(self) -> None:
        self._flush = None
        calls, self._settles = [c for c in self._settles if not c[2].done()], []
        if not calls:
            return
        many = getattr(self.actor, "settle_many", None)  # None: a ledger actor started by an older adray
        if many is None:
            for events, key, fut in calls:
                task = asyncio.ensure_future(self._answer(self.actor.settle.remote(events, key), [fut], one=True))
                self._sent.add(task)
                task.add_done_callback(self._sent.discard)
            return
        ref = many.remote([(events, key) for events, key, _ in calls])
        task = asyncio.ensure_future(self._answer(ref, [fut for _, _, fut in calls]))
        self._sent.add(task)
        task.add_done_callback(self._sent.discard)

    @staticmethod
    async def _answer(ref: Any, futs: list[asyncio.Future[list[bool]]], one: bool = False) -> None:
        try:
            answers = [await ref] if one else await ref
        except Exception as exc:  # noqa: BLE001 - the actor call failed: every caller's settle did
            for fut in futs:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for fut, ans in zip(futs, answers, strict=True):
            if not fut.done():
                if isinstance(ans, str):
                    fut.set_exception(RuntimeError(f"the ledger refused the settle: {ans}"))
                else:
                    fut.set_result(ans)

    async def void(self, key: str) -> dict[str, Any]:
        return await self.actor.void.remote(key)


def stage_schemas(metas: dict[str, dict[str, Any]], refs: dict[str, str | None], max_items: int) -> dict[str, Any]:
    policies = stage_workloads()
    return {role: policies[role][1].request_schema(metas[role], max_items) if ref is not None else None
            for role, ref in refs.items()}


@serve.deployment(max_ongoing_requests=128, graceful_shutdown_timeout_s=20)
@serve.ingress()
class FeedIngress:
    def __init__(self, args: dict[str, Any], refs: dict[str, str | None], metas: dict[str, dict[str, Any]],
                 registry: str, handles: dict[str, Any], state_uri: str) -> None:
        import torch

        from adray.decision_log import DecisionLog
        from adray.pacing import PacingSettings, get_ledger
        from adray.storage import Storage

        torch.set_num_threads(1)  # replicas share the cores; scale out with replicas
        self.args, self.refs, self.metas = args, refs, metas
        stages: dict[str, Any] = {}
        for role, ref in refs.items():
            if ref is None:
                stages[role] = None
            elif role in handles:
                stages[role] = RemoteStage(handles[role], ref)
            else:
                stages[role] = LocalStage.load(ref, registry, args["batch_wait_s"], args["max_batch"])
        window = int(metas["allocation"]["obs_layout"]["window"]) if refs.get("allocation") else 5
        tasks = len(stage_workloads()["bidding"][1].task_names(metas["bidding"])) if refs.get("bidding") else None
        steps = args["steps_per_day"] or int(metas.get("bidding", {}).get("steps_per_day", 48))
        same = {f.name: args[f.name] for f in dataclasses.fields(GraphSettings) if f.name in args}  # FeedArgs names
        settings = GraphSettings(**{**same, "window": window, "manual_weights": tuple(args["manual_weights"]),
                                    "fixed_ad_slots": tuple(s for s in args["fixed_ad_slots"] if s < window),
                                    "bidding_tasks": tasks})
        pacing = PacingSettings(steps_per_day=steps, day_seconds=args["day_seconds"])
        actor = get_ledger(args["ledger_name"], state_uri, "pacing/" + args["ledger_name"], pacing)
        self.graph = FeedGraph(stages, ActorLedger(actor), settings, pacing)
        self.waves = Waves(args["max_batch"])
        self.log = DecisionLog(Storage(state_uri), args["log_stream"], log_schema(stage_workloads()["utility"][1]),
                               writer_id=f"feed-{_replica_tag()}", batch_rows=args["log_batch_rows"],
                               flush_every_s=args["log_flush_s"])
        self.item_dim = (int(metas["allocation"]["obs_layout"]["item_dim"]) if refs.get("allocation") else None)
        self.metrics, self.pump = self._start_metrics(actor)
        # Everything loaded so far (torch, Ray, five models) lives as long as the replica: out of the
        # cyclic GC's sight, a full collection scans only what requests made. Unfrozen, one full
        # collection took 158 ms in-process (250 ms in the replica: a p99 stall at 100 req/s).
        gc.freeze()

    def _start_metrics(self, actor: Any) -> tuple[FeedMetrics | None, MetricsPump | None]:
        """The replica's metrics (serve_apps/feed_metrics.py) and the thread that flushes them."""
        if not self.args.get("metrics", True):
            return None, None
        import ray

        metrics = FeedMetrics(_app_name(), AdvertiserTags(self.args.get("metrics_advertisers") or (),
                                                          self.args.get("metrics_max_advertisers", 20)))
        pump = MetricsPump(metrics, lambda: dict(self.graph.counters), self.log.stats,
                           lambda: ray.get(actor.budgets.remote(), timeout=10),
                           flush_s=self.args.get("metrics_flush_s", 1.0),
                           budget_every_s=self.args.get("metrics_budget_s", 10.0))
        return metrics, pump

    def __serve_build_asgi_app__(self) -> Any:
        max_items = self.args["max_candidates"]
        FeedRequest = feed_request_schema(stage_schemas(self.metas, self.refs, max_items), max_items)  # noqa: N806
        api = FastAPI(title="adray feed graph", version="1",
                      description="Ranking, auto-bidding, utility, allocation and channel stages composed; "
                                  f"models {self.refs}; at most {max_items} ads and "
                                  f"organic items each; {self.args['max_body_bytes']} bytes per request.")

        async def feed(request: Request) -> Response:
            # The body is parsed and validated in one pass by pydantic-core (FastAPI's own path
            # decodes JSON to Python objects first, then validates them: ~2x the work for a 48 KB
            # request); the answer is the graph's own dict, encoded once (the response model
            # documents it; re-validating what the graph built would only cost time).
            t0 = time.perf_counter()
            body, detail = parse_feed(FeedRequest, await request.body(), self.item_dim)
            metrics = self.metrics
            if body is None:
                if metrics is not None:
                    metrics.request("invalid")
                return JSONResponse(status_code=422, content={"detail": detail})
            try:
                deadline = request.scope.get("state", {}).get(DEADLINE_KEY)
                out = await self.waves.run(lambda: self.graph.decide(body, deadline))
            except BaseException as exc:
                if metrics is not None:
                    metrics.request("error" if isinstance(exc, Exception) else "cancelled")
                raise
            self.log.append([out.row])  # no I/O: the log's thread writes it
            # allow_nan=False: never "NaN" in a JSON answer (the graph guarantees finite numbers)
            response = Response(json.dumps(out.answer, separators=(",", ":"), allow_nan=False),
                                media_type="application/json")
            if metrics is not None:
                metrics.answered(body, out.answer, (time.perf_counter() - t0) * 1e3)
            return response

        api.add_api_route("/v1/feed", feed, methods=["POST"], response_model=FeedResponse,
                          summary="the mixed feed of one request: ads ranked, bid, priced and placed",
                          openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                              "schema": {"$ref": "#/components/schemas/FeedRequest"}}}}})
        _document_request(api, FeedRequest)

        admission = Admission(BodyLimit(api, self.args["max_body_bytes"]), self.args["deadline_ms"],
                              self.args["max_in_flight"], self.args["retry_after_s"],
                              self.args["lag_target_ms"], self.args["latency_target"],
                              on_shed=self.metrics.shed if self.metrics is not None else None,
                              wait_ms=self.args["admission_wait_ms"], agent=self.args["admission_agent"])

        @api.get("/v1/graph")
        async def graph() -> dict[str, Any]:
            stats = self.log.stats()
            batching = {role: {"batches": st.batches, "decided": st.decided} for role, st in
                        self.graph.stages.items() if isinstance(st, LocalStage)}
            return {"models": self.refs, "mode": self.args["mode"], "settings": self.args,
                    "decision_log": {"appended": stats.appended, "flushed": stats.flushed, "dropped": stats.dropped,
                                     "rejected": stats.rejected, "last_error": stats.last_error},
                    "counters": self.graph.counters, "out_of_vocab": self.graph.out_of_vocab,
                    "admission": {"in_flight": admission.in_flight, "limit": round(admission.limit, 2),
                                  "lag_ms": round(admission.lag_s * 1e3, 2), "shed": dict(admission.shed),
                                  "waiting": admission.waiting, "waited": admission.waited,
                                  "agent_port": admission.agent_port,
                                  "waves": self.waves.waves, "started": self.waves.started},
                    "batching": batching}

        @api.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        return admission

    def __del__(self) -> None:
        pump = getattr(self, "pump", None)
        if pump is not None:
            pump.close()
        log = getattr(self, "log", None)
        if log is not None:
            log.close(timeout=10.0)


def parse_feed(model: type[pydantic.BaseModel], raw: bytes | str, item_dim: int | None
               ) -> tuple[dict[str, Any], None] | tuple[None, list[dict[str, Any]]]:
    """``(request, None)``: the body validated against the FeedRequest ``model`` as a plain dict;
    ``(None, detail)``: the 422's detail, each error naming its field as FastAPI does (``loc``
    starts with ``body``). Item content vectors must also have the allocation model's length
    ``item_dim`` (its schema cannot say it; None: not checked). Validated by the model's dict twin
    (``adray.dict_schema``: the same checks, straight into dicts; 0.34 ms for the 48 KB request
    against 0.46 ms for the model and its ``model_dump``)."""
    try:
        body = _dict_adapter(model).validate_json(raw)
    except pydantic.ValidationError as exc:
        return None, [{"type": e["type"], "msg": explain(e), "loc": ["body", *e["loc"]]}
                      for e in exc.errors(include_url=False)]
    if item_dim is not None:
        for kind in ("ads", "organic"):
            for i, item in enumerate(body[kind]):
                if len(item["content"]) != item_dim:
                    return None, [{"type": "length", "loc": ["body", kind, i, "content"],
                                   "msg": f"expected {item_dim} floats (the allocation model's item_dim), "
                                          f"got {len(item['content'])}"}]
    return body, None


_dict_adapter = functools.lru_cache(maxsize=8)(dict_adapter)
"""A FeedRequest model's dict twin, built once per model (a replica has one)."""


def _document_request(api: FastAPI, model: type[pydantic.BaseModel]) -> None:
    """Put ``model``'s JSON schema (and its nested models) into the app's OpenAPI components: the
    route reads the raw body, so FastAPI does not see the model by itself."""
    build = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = build()
            doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(doc.pop("$defs", {}))
            components[model.__name__] = doc
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def _app_name() -> str:
    """This Serve replica's application name, or ``local`` outside Serve."""
    try:
        return serve.get_replica_context().app_name
    except Exception:  # noqa: BLE001 - outside a replica
        return "local"


def _replica_tag() -> str:
    """This Serve replica's id (letters and digits), or ``local`` outside Serve."""
    try:
        return serve.get_replica_context().replica_tag
    except Exception:  # noqa: BLE001 - outside a replica
        return "local"
