"""Typed app builder: the ``import_path`` of ``serve_config.yaml`` and what ``adray serve up`` runs.

    serve deploy serve_apps/serve_config.yaml       # import_path: serve_apps.app:build_app

``args`` are validated by :class:`AppArgs` (unknown keys rejected). The model reference is
resolved against the registry *before* anything is deployed: an unknown name or version fails
with the list of published models, and ``@latest`` is pinned so all replicas load one version.
"""

# No `from __future__ import annotations` here: Serve inspects build_app's annotation at runtime
# to validate the config's args as AppArgs; a string annotation would hand it a plain dict.
import pydantic
from ray.serve import Application

from adray.serving import MAX_BODY_BYTES, MAX_CANDIDATES, default_registry, feature_map_of, resolve_model
from serve_apps.ingress import Ingress
from serve_apps.ranking import Ranking


class AppArgs(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    model: str = "pwiser@latest"
    """Registry reference name@version (``latest``, ``vNNNN`` or a number)."""
    registry: str | None = None
    """Registry directory; default ``$ADRAY_REGISTRY`` or ``$ADRAY_HOME/registry`` where the app is built."""
    num_replicas: int = pydantic.Field(1, ge=1)
    """Ranking replicas."""
    replica_cpus: float = pydantic.Field(0.25, gt=0)
    """CPUs reserved per ranking replica (fractional so Serve fits beside Train on small machines)."""
    replica_gpus: float = pydantic.Field(0.0, ge=0)
    """GPUs per ranking replica (a GPU worker node of cluster.yaml)."""
    ingress_cpus: float = pydantic.Field(0.1, gt=0)
    """CPUs reserved by the ingress replica."""
    max_batch_size: int = pydantic.Field(8, ge=1)
    """@serve.batch: most requests scored in one forward pass (benchmarks/serve_load.py)."""
    batch_wait_timeout_s: float = pydantic.Field(0.002, ge=0)
    """@serve.batch: longest wait for a batch to fill."""
    concat_batches: bool = False
    """Score a batch's requests in one forward pass (faster; last-bit differences vs offline)."""
    max_candidates: int = pydantic.Field(MAX_CANDIDATES, ge=1)
    """Candidates per request; more is a 422 that states the limit."""
    max_body_bytes: int = pydantic.Field(MAX_BODY_BYTES, ge=1024)
    """Request body size; more is a 413 that states the limit."""


def build_app(args: AppArgs) -> Application:
    registry = args.registry or default_registry()
    mv = resolve_model(args.model, registry)  # raises ServeError before anything is deployed
    ranking = Ranking.options(
        num_replicas=args.num_replicas,
        ray_actor_options={"num_cpus": args.replica_cpus, "num_gpus": args.replica_gpus},
    ).bind(mv.ref, registry, args.max_batch_size, args.batch_wait_timeout_s, args.concat_batches)
    return Ingress.options(ray_actor_options={"num_cpus": args.ingress_cpus}).bind(
        ranking, mv.ref, feature_map_of(mv).to_dict(), args.max_candidates, args.max_body_bytes
    )
