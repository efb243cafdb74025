"""Typed app builder: the ``import_path`` of ``serve_config.yaml`` and what ``adray serve up`` runs.

    serve deploy serve_apps/serve_config.yaml       # import_path: serve_apps.app:build_app

``args`` are validated by :class:`AppArgs` (unknown keys rejected). The model reference is
resolved against the registry *before* anything is deployed: an unknown name or version fails
with the list of published models, and ``@latest`` is pinned so all replicas load one version.
Any workload's model serves the same way: its policy decides, at ``POST /v1/<policy route>``.
"""

# No `from __future__ import annotations` here: Serve inspects build_app's annotation at runtime
# to validate the config's args as AppArgs; a string annotation would hand it a plain dict.
import pydantic
from ray.serve import Application

from adray.serving import MAX_BODY_BYTES, MAX_ITEMS, default_registry, policy_meta, resolve_model
from serve_apps.ingress import Ingress
from serve_apps.policy import PolicyDeployment


class AppArgs(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    model: str
    """Registry reference name@version (``latest``, ``vNNNN`` or a number); any workload's model."""
    registry: str | None = None
    """Registry URI (a path or ``s3://...``); default ``$ADRAY_REGISTRY``, else ``$ADRAY_STORAGE/registry``
    or ``$ADRAY_HOME/registry`` where the app is built."""
    num_replicas: int = pydantic.Field(1, ge=1)
    """Policy replicas."""
    replica_cpus: float = pydantic.Field(0.25, gt=0)
    """CPUs reserved per policy replica (fractional so Serve fits beside Train on small machines)."""
    replica_gpus: float = pydantic.Field(0.0, ge=0)
    """GPUs per policy replica (a GPU worker node of cluster.yaml)."""
    ingress_cpus: float = pydantic.Field(0.1, gt=0)
    """CPUs reserved by the ingress replica."""
    max_batch_size: int = pydantic.Field(8, ge=1)
    """@serve.batch: most requests decided together (benchmarks/serve_load.py)."""
    batch_wait_timeout_s: float = pydantic.Field(0.002, ge=0)
    """@serve.batch: longest wait for a batch to fill."""
    concat_batches: bool = False
    """Decide a batch's requests in one call (faster; last-bit differences vs offline)."""
    max_candidates: int = pydantic.Field(MAX_ITEMS, ge=1)
    """Items (candidates) per list of a request; more is a 422 that states the limit."""
    max_body_bytes: int = pydantic.Field(MAX_BODY_BYTES, ge=1024)
    """Request body size; more is a 413 that states the limit."""
    env: dict[str, str] = pydantic.Field(default_factory=dict)
    """Environment of the replicas, e.g. credentials of a remote registry (``AWS_ACCESS_KEY_ID``...)
    on a cluster whose nodes have none of their own."""


def build_app(args: AppArgs) -> Application:
    registry = args.registry or default_registry()
    mv = resolve_model(args.model, registry)  # raises ServeError before anything is deployed
    wl, _, meta = policy_meta(mv, registry)
    runtime_env = {"env_vars": dict(args.env)} if args.env else {}
    policy = PolicyDeployment.options(
        num_replicas=args.num_replicas,
        ray_actor_options={"num_cpus": args.replica_cpus, "num_gpus": args.replica_gpus, "runtime_env": runtime_env},
    ).bind(mv.ref, registry, args.max_batch_size, args.batch_wait_timeout_s, args.concat_batches)
    return Ingress.options(ray_actor_options={"num_cpus": args.ingress_cpus, "runtime_env": runtime_env}).bind(
        policy, wl.name, mv.ref, meta, args.max_candidates, args.max_body_bytes
    )
