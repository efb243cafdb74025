"""Serving any workload's policy: resolve a model in the registry, load its policy, decide.

The Serve application (``serve_apps``) and offline inference call the same :class:`PolicyHandle`:
a published version -> ``Workload.load_model`` -> ``Workload.policy(model, cfg, meta, ref)`` ->
``decide``. The HTTP request schema is the policy's own (generated from the model's meta, e.g. its
FeatureMap), so a missing or mistyped field is a 422 naming it and the OpenAPI page lists them.
Nothing here knows a workload by name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from adray.models import load_model, read_model_files
from adray.paths import registry_uri
from adray.registry import ModelVersion, Registry, RegistryError
from adray.workload import Policy, Workload, get_workload

APP_NAME = "adray"
MAX_ITEMS = 500
"""Candidates (list items) per request; more is a 422 stating the limit."""
MAX_BODY_BYTES = 1 << 20
"""Request body size; more is a 413 stating the limit."""


class ServeError(RuntimeError):
    """A deployment that cannot start (unknown model, bad options); the message says why."""


def resolve_model(ref: str, registry: str | None = None) -> ModelVersion:
    """The concrete version behind ``ref`` (``@latest`` pinned), or a ServeError listing what exists.

    Pinning matters: every replica must load the same version even if ``latest`` moves later.
    """
    reg = Registry(registry)
    try:
        mv = reg.get(ref)
        get_workload(mv.manifest.get("workload", "?"))
    except (RegistryError, LookupError) as exc:
        available = [m.ref for m in reg.list()]
        raise ServeError(f"{exc}. Published models: {available or 'none'} (registry {reg.root})") from None
    return mv


def policy_meta(mv: ModelVersion, registry: str | None = None) -> tuple[Workload, Any, dict[str, Any]]:
    """The workload, resolved config and meta of a version (what the schemas need; no weights)."""
    wl = get_workload(mv.manifest["workload"])
    cfg, meta = read_model_files(Registry(registry).local_dir(mv), wl)
    return wl, cfg, meta


class PolicyHandle:
    """A loaded policy: what a Serve replica holds and what offline inference uses."""

    def __init__(self, ref: str, registry: str | None = None) -> None:
        loaded = load_model(ref, Registry(registry))
        self.ref = loaded.version.ref
        self.workload = loaded.workload
        self.policy: Policy = loaded.workload.policy(loaded.model, loaded.cfg, loaded.meta, self.ref)

    def decide(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.policy.decide(requests)


def validate_requests(policy_cls: type[Policy], meta: dict[str, Any], requests: Sequence[dict[str, Any]],
                      max_items: int = MAX_ITEMS) -> list[dict[str, Any]]:
    """Requests as the HTTP ingress would pass them on: validated by the policy's schema, dumped."""
    schema = policy_cls.request_schema(meta, max_items)
    return [schema.model_validate(r).model_dump() for r in requests]


def decide_offline(ref: str, requests: Sequence[dict[str, Any]], registry: str | None = None) -> list[dict[str, Any]]:
    """Offline inference of a published model: each request validated and decided on its own,
    as a Serve replica answers it (``tests/contracts`` checks that the HTTP answer equals this one:
    decisions exactly, floats to float32 rounding, since a replica's torch runs on one thread)."""
    handle = PolicyHandle(resolve_model(ref, registry).ref, registry)
    valid = validate_requests(type(handle.policy), handle.policy.meta, requests)
    return [handle.decide([r])[0] for r in valid]


def default_registry() -> str:
    """The registry URI replicas should read (from ADRAY_REGISTRY / ADRAY_STORAGE / ADRAY_HOME)."""
    return registry_uri()


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
