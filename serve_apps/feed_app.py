"""The composed feed graph on Ray Serve: ``POST /v1/feed`` (``adray serve graph``, ``serve deploy``).

Two layouts of the same :class:`serve_apps.feed_graph.FeedGraph`, chosen by ``FeedArgs.mode``:

* ``fused``: each FeedIngress replica loads the five policies itself and calls them in threads
  (no handle hop per stage: on a 2-core machine a hop costs ~10 ms, see benchmarks/graph_load.py);
* ``split``: each stage is its own :class:`serve_apps.policy.PolicyDeployment` (one per model,
  scaling on its own: ``stage_replicas``) called through a DeploymentHandle.

Either way the pacing ledger is one Ray actor (``adray.pacing``; its state persisted under
``state_uri``) and every replica appends its decisions to the decision log under ``state_uri``
(``adray.decision_log``, written off the request path). Models are given as ``name@alias``,
pinned to the version the alias names when the app is built, so all replicas load one version;
only promoted aliases serve (``@serving`` by default; ``serve_unpromoted`` opts in to any version
for demos). A stage given as ``none`` is not deployed and always serves its safe default.
"""

# No `from __future__ import annotations`: Serve and FastAPI inspect annotations at runtime.
import os
from typing import Any, Literal

import pydantic
from ray.serve import Application

from adray.registry import Registry, is_alias
from adray.serving import MAX_BODY_BYTES, MAX_ITEMS, ServeError, default_registry, policy_meta, resolve_model
from serve_apps.feed_schema import ROLES, ROUTES, stage_workloads


class FeedArgs(pydantic.BaseModel):
    """Arguments of the feed graph application (unknown keys are an error)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    ranking: str | None = None
    bidding: str | None = None
    utility: str | None = None
    allocation: str | None = None
    channel: str | None = None
    """Each stage's model as ``name@alias`` (an alias moved by ``adray models promote``), ``none`` to
    serve the stage's safe default, or unset: ``@serving`` of the workload whose policy answers the
    stage's route (rank, bid, utility, allocate, channel). A version or ``@latest`` is refused
    unless ``serve_unpromoted``."""
    serve_unpromoted: bool = False
    """Opt-in for demos and benchmarks: stages may name any version (``@latest``, ``@v0003``), and an
    unset stage whose model has no ``@serving`` serves its latest. Off: the graph serves only
    promoted versions, so a freshly trained version never goes live by itself."""
    registry: str | None = None
    mode: Literal["fused", "split"] = "fused"
    num_replicas: int = pydantic.Field(1, ge=1)
    """FeedIngress replicas (in fused mode each holds all five policies)."""
    replica_cpus: float = pydantic.Field(0.5, gt=0)
    stage_replicas: int = pydantic.Field(1, ge=1)
    """Replicas of each stage deployment (split mode)."""
    stage_cpus: float = pydantic.Field(0.25, gt=0)
    stage_timeout_s: float = pydantic.Field(1.0, gt=0)
    batch_wait_s: float = pydantic.Field(0.0, ge=0)
    """Fused mode: an idle stage holds a call this long for company before it starts (0: starts at
    once). Either way the calls that arrive while a stage runs go together in its next batch
    (``serve_apps.feed_batching``)."""
    max_batch: int = pydantic.Field(32, ge=1)
    """Fused mode: most requests in one stage batch."""
    deadline_ms: float = pydantic.Field(100.0, gt=0, le=10_000)
    """Each feed request's deadline unless its ``x-deadline-ms`` header sets one: past it no stage is
    started (fallbacks), and a request that arrives past it is shed (``serve_apps.feed_admission``)."""
    max_in_flight: int = pydantic.Field(8, ge=1)
    """Most requests one replica decides at once; one more is shed with a 503 and Retry-After. The
    limit in force adapts below it to the CPU the replica gets (``lag_target_ms``)."""
    lag_target_ms: float = pydantic.Field(10.0, gt=0)
    latency_target: float = pydantic.Field(0.5, gt=0, le=1)
    """The admission limit falls while the replica's event loop runs later than ``lag_target_ms``
    or requests take longer than ``latency_target`` x their deadline here (its CPU is short), and
    rises again up to ``max_in_flight`` while neither holds (``serve_apps.feed_admission``)."""
    admission_wait_ms: float = pydantic.Field(0.0, ge=0, le=10_000)
    """A request over the admission limit waits this long for a slot (never past its deadline)
    before it is shed; 0: shed at once. For replicas behind a gate that bounds what each holds
    (``adray serve graph --shed-port``), so that the gate, not the replica, sheds the excess
    (``serve_apps.feed_admission``)."""
    admission_agent: bool = False
    """Each replica answers HAProxy's agent check with its admission limit in force
    (``maxconn:<n>``; its port in ``/v1/graph``'s ``admission.agent_port``), so that a gate in front
    (``adray serve graph --shed-port``) sends it no more than it admits."""
    retry_after_s: int = pydantic.Field(1, ge=0)
    """``Retry-After`` of a shed request's 503."""
    max_queued_requests: int = pydantic.Field(64, ge=1)
    """Serve's bound behind the admission check: requests a replica holds beyond ``max_in_flight``
    (while they are checked and shed) or that wait for one (Serve answers 503 beyond it)."""
    manual_weights: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    fixed_ad_slots: tuple[int, ...] = (1, 3)
    fallback_alpha_ratio: float = pydantic.Field(1.0, ge=0)
    fallback_pctr: float = pydantic.Field(0.01, ge=0, le=1)
    fallback_pcvr: float = pydantic.Field(0.05, ge=0, le=1)
    feed_channel: int | None = None
    alloc_bid_scale: float = pydantic.Field(1.0, ge=0)
    state_uri: str | None = None
    """Where the pacing ledger and decision log live (a path or s3://...): default $ADRAY_STORAGE,
    else $ADRAY_HOME. Every node of the cluster must reach it."""
    ledger_name: str = "adray-pacing"
    """Name of the pacing ledger actor (one per graph; two graphs with one name share budgets)."""
    day_seconds: float = pydantic.Field(86400.0, gt=0)
    """Length of a pacing day (short in demos and tests)."""
    steps_per_day: int | None = pydantic.Field(None, ge=1)
    """Decision steps of a pacing day; default the bidding model's."""
    log_stream: str = "decisions/feed"
    log_batch_rows: int = pydantic.Field(1024, ge=1)
    log_flush_s: float = pydantic.Field(1.0, gt=0)
    max_candidates: int = pydantic.Field(MAX_ITEMS, ge=1)
    max_body_bytes: int = pydantic.Field(4 * MAX_BODY_BYTES, ge=1024)
    env: dict[str, str] = pydantic.Field(default_factory=dict)
    metrics: bool = True
    """Export the graph's Ray metrics (``serve_apps/feed_metrics.py``: requests, stage latency,
    fallbacks, shed, refused charges, spend and budgets, decision-log rows) for Prometheus."""
    metrics_advertisers: tuple[str, ...] = ()
    """Advertisers with their own ``advertiser`` series (spend, budget); the rest count as ``other``.
    Empty: the first ``metrics_max_advertisers`` each replica meets."""
    metrics_max_advertisers: int = pydantic.Field(20, ge=0)
    metrics_flush_s: float = pydantic.Field(1.0, gt=0)
    """How often a replica hands its counters to Ray (and samples the graph's and the log's)."""
    metrics_budget_s: float = pydantic.Field(10.0, gt=0)
    """How often a replica asks the ledger for today's budgets and spend (the budget gauges)."""
    access_log: bool = False
    """Serve's access log line per request in the replicas' logs. Off by default: at 200 req/s it
    is 200 lines a second of what the metrics count. (Off, the line is not written; Serve still
    builds its log record, ~1% of a replica's event loop.)"""


def resolve_stages(args: FeedArgs, registry: str) -> tuple[dict[str, str | None], dict[str, dict[str, Any]]]:
    """Pinned refs and metas of the stages' models; ServeError naming the stage if one is wrong."""
    refs: dict[str, str | None] = {}
    metas: dict[str, dict[str, Any]] = {}
    defaults = stage_workloads()
    reg = Registry(registry)
    for role in ROLES:
        name = defaults[role][0]
        ref = getattr(args, role) or f"{name}@serving"
        if ref.lower() == "none":
            refs[role] = None
            continue
        ref = _promoted(role, ref, reg, args.serve_unpromoted)
        try:
            mv = resolve_model(ref, registry)
        except ServeError as exc:
            raise ServeError(f"{role} stage: {exc}") from None
        wl, _, meta = policy_meta(mv, registry)
        if wl.policy.route != ROUTES[role]:
            raise ServeError(f"{role} stage: {mv.ref} is a {wl.name} model answering /v1/{wl.policy.route}; the "
                             f"{role} stage needs a policy answering /v1/{ROUTES[role]} (or 'none')")
        refs[role], metas[role] = mv.ref, meta
    return refs, metas


def _promoted(role: str, ref: str, reg: Registry, unpromoted: bool) -> str:
    """``ref`` if it names an alias that exists (or ``unpromoted`` allows anything); an unset
    stage's ``@serving`` falls back to ``@latest`` only when ``unpromoted``. Else a ServeError
    saying how to promote a version."""
    name, _, tag = ref.partition("@")
    if unpromoted:
        return f"{name}@latest" if ref == f"{name}@serving" and "serving" not in _aliases(reg, name) else ref
    how = (f"promote one: `adray models promote {name}@vNNNN --force` for a first version (recorded), then "
           f"`--gate ope` for the next ones; or deploy with --unpromoted (FeedArgs.serve_unpromoted) in a demo")
    if not is_alias(tag):
        raise ServeError(f"{role} stage: {ref!r} is not a promoted alias: the graph serves only versions moved "
                         f"through `adray models promote` (e.g. {name}@serving); {how}")
    if tag not in _aliases(reg, name):
        raise ServeError(f"{role} stage: {name} has no @{tag} version, so the stage has nothing promoted to serve; "
                         f"{how}")
    return ref


def _aliases(reg: Any, name: str) -> dict[str, str]:
    try:
        return reg.aliases(name)
    except LookupError:
        return {}


def build_feed_app(args: FeedArgs) -> Application:
    from serve_apps.feed_ingress import FeedIngress
    from serve_apps.policy import PolicyDeployment

    registry = args.registry or default_registry()
    refs, metas = resolve_stages(args, registry)  # before anything is deployed
    runtime_env = {"env_vars": dict(args.env)} if args.env else {}
    handles = {}
    if args.mode == "split":
        for role, ref in refs.items():
            if ref is not None:
                handles[role] = PolicyDeployment.options(
                    name=f"stage-{role}", num_replicas=args.stage_replicas,
                    ray_actor_options={"num_cpus": args.stage_cpus, "runtime_env": runtime_env},
                ).bind(ref, registry, 8, 0.002, False)
    state_uri = args.state_uri or os.environ.get("ADRAY_STORAGE") or _home()
    return FeedIngress.options(
        num_replicas=args.num_replicas,
        max_ongoing_requests=args.max_in_flight + args.max_queued_requests,
        max_queued_requests=args.max_queued_requests,
        backpressure_config={"status_code": 503, "retry_after_s": args.retry_after_s},
        logging_config={"enable_access_log": args.access_log},
        ray_actor_options={"num_cpus": args.replica_cpus, "runtime_env": runtime_env},
    ).bind(args.model_dump(), refs, metas, registry, handles, state_uri)


def _home() -> str:
    from adray.paths import home

    return str(home())

