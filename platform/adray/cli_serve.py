"""``adray serve up|down|status``, ``adray jobs list|logs|stop`` and ``adray submit -- CMD``.

Wired into ``adray.cli`` with ``app.add_typer(serve_app, name="serve")``,
``app.add_typer(jobs_app, name="jobs")`` and ``app.command("submit", ...)(submit)``.

``serve up`` needs a Ray that outlives the command (so that a second ``serve up`` can roll a new
model version, and ``status``/``down`` can find the app): with ``--address`` or ``RAY_ADDRESS``
it connects there; otherwise it joins the local cluster started by an earlier ``serve up`` or
starts one with ``ray start --head`` (stop it with ``ray stop``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer

from adray import jobs as _jobs

serve_app = typer.Typer(help="Serve a published model's policy on Ray Serve.", no_args_is_help=True)
jobs_app = typer.Typer(help="Ray Jobs on a cluster: list, logs, stop.", no_args_is_help=True)

ADDRESS_HELP = "Ray cluster (GCS host:port or ray://); default RAY_ADDRESS, else the local cluster."
JOB_ADDRESS_HELP = "Ray dashboard URL (http://HEAD:8265); default RAY_ADDRESS, else http://127.0.0.1:8265."


# --------------------------------------------------------------------------- serve


def connect(address: str | None = None, start_local: bool = True) -> None:
    """Connect to ``address``/RAY_ADDRESS, else the running ``ray start`` cluster, else start one.

    The local cluster is the one named by Ray's address file, and only while it answers
    (:func:`adray.runtime.running_head_address`): a stale file left by a stopped cluster is ignored,
    and another command's embedded Ray on this host is never joined.

    Raises:
        ConnectionError: nothing to connect to and ``start_local`` is False.
    """
    import ray

    from adray.runtime import ensure_ray, own_dashboard, running_head_address, serve_fast_path_env

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ensure_ray(address)
        return
    if running_head_address():
        # "auto" now resolves to exactly that file's cluster, and (a cluster found locally) turns on
        # its token authentication as Ray does; an explicit address would not (Ray 2.60, ray.init)
        ensure_ray("auto")
        return
    if not start_local:
        raise ConnectionError("no Ray cluster to talk to: none runs here (no live `ray start` cluster); give "
                              "--address or RAY_ADDRESS, or deploy first with `adray serve up`/`adray serve graph`")
    ray_bin = Path(sys.executable).with_name("ray")
    typer.echo("[adray] no local Ray running: starting one with `ray start --head` (stop: `ray stop`)")
    dash_port, dash_env = own_dashboard()  # its processes ask their own dashboard (adray.runtime.own_dashboard)
    subprocess.run([str(ray_bin), "start", "--head", "--disable-usage-stats", "--dashboard-port", str(dash_port)],
                   check=True, capture_output=True,
                   env={**os.environ, **serve_fast_path_env(default_ingress="haproxy"), **dash_env})
    if running_head_address() is None:
        raise ConnectionError("`ray start --head` finished but no cluster answers at its address file")
    ensure_ray("auto")


def _connect_or_exit(address: str | None) -> None:
    try:
        connect(address, start_local=False)
    except ConnectionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def serve_up(args: Any, *, address: str | None = None, host: str = "127.0.0.1", port: int = 8000,
             name: str = "adray", route_prefix: str = "/", wait_s: float = 300.0) -> str:
    """Build (resolving the model first), deploy or roll the app; return the HTTP URL.

    Raises:
        adray.serving.ServeError: unknown model name/version (before anything is deployed).
    """
    from serve_apps.app import build_app

    app = build_app(args)  # resolves the model in the registry before touching the cluster
    return deploy(app, address=address, host=host, port=port, name=name, route_prefix=route_prefix, wait_s=wait_s,
                  options=f"--replicas {args.num_replicas} x --replica-cpus {args.replica_cpus:g}")


def serve_graph(args: Any, *, address: str | None = None, host: str = "127.0.0.1", port: int = 8000,
                name: str = "feed", route_prefix: str = "/", wait_s: float = 600.0) -> str:
    """Build the composed feed graph (``serve_apps.feed_app.FeedArgs``; models resolved first), deploy
    or roll it; return the HTTP URL.

    Raises:
        adray.serving.ServeError: a stage's model is unknown or answers another route.
    """
    from serve_apps.feed_app import build_feed_app

    app = build_feed_app(args)
    return deploy(app, address=address, host=host, port=port, name=name, route_prefix=route_prefix, wait_s=wait_s,
                  options=f"--replicas {args.num_replicas}" + (f", --stage-replicas {args.stage_replicas}"
                                                                if args.mode == "split" else ""))


def deploy(app: Any, *, address: str | None, host: str, port: int, name: str, route_prefix: str,
           wait_s: float, options: str = "the app's replicas") -> str:
    """Run a built Serve application on the cluster (starting Serve if needed); the HTTP URL.

    Raises:
        adray.runtime.ResourceError: the replicas ask for more than the cluster has or can scale to
            (``options`` names what sets them); nothing is deployed.
    """
    from ray import serve

    connect(address)
    check_app_fits(app, name, options)
    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(app, name=name, route_prefix=route_prefix, blocking=False)
        _wait_running(name, wait_s)
    except KeyboardInterrupt:  # the command stops; the cluster may outlive it, and the app with it
        print(f"\n[adray] interrupted: stopped waiting for serve app {name!r}; on a cluster that outlives this "
              f"command it may still be deploying (remove it: adray serve down --name {name})",
              file=sys.stderr, flush=True)
        raise
    return http_url()


def app_resources(app: Any, name: str) -> tuple[dict[str, float], list[str]]:
    """What a Serve application's replicas hold at start: ``({"CPU": 2.25}, [a line per deployment])``.

    Per deployment: its starting replicas (``num_replicas``, or the autoscaling config's initial or
    minimum count) x one replica's resources (its placement group bundles, else its actor options
    with Serve's default of one CPU)."""
    from ray.serve._private.build_app import build_app  # what serve.run builds (Ray 2.60, private)

    total: dict[str, float] = {}
    lines = []
    for d in build_app(app, name=name).deployments:
        auto = getattr(d._deployment_config, "autoscaling_config", None)
        replicas = int((auto.initial_replicas if auto.initial_replicas is not None else auto.min_replicas)
                       if auto is not None else d.num_replicas)
        bundles = getattr(d._replica_config, "placement_group_bundles", None)
        per: dict[str, float] = {}
        if bundles:
            for bundle in bundles:
                for k, v in bundle.items():
                    per[k] = per.get(k, 0.0) + float(v)
        else:
            opts = d.ray_actor_options or {}
            per = {"CPU": float(1 if opts.get("num_cpus") is None else opts["num_cpus"]),
                   "GPU": float(opts.get("num_gpus") or 0),
                   **{k: float(v) for k, v in (opts.get("resources") or {}).items()}}
        for k, v in per.items():
            total[k] = total.get(k, 0.0) + replicas * v
        gpu = f" + {per['GPU']:g} GPU" if per.get("GPU") else ""
        lines.append(f"{d.name} {replicas} x {per.get('CPU', 0):g} CPU{gpu}")
    return total, lines


def check_app_fits(app: Any, name: str, options: str) -> None:
    """Refuse a Serve app whose replicas can never all be placed (Serve would retry them forever)."""
    from adray.runtime import check_fits

    need, lines = app_resources(app, name)
    check_fits(options, need, f"the replicas of serve app {name!r} ({'; '.join(lines)})",
               "use fewer replicas or fewer CPUs per replica, or a bigger cluster (--address)")


def direct_urls(name: str) -> list[str]:
    """Base URLs of ``name``'s ingress replicas on their own ports (Serve's direct ingress; see
    ``adray.runtime.SERVE_FAST_PATH``), [] when the cluster runs without it. These skip the proxy's
    hop; a client spreads its requests over them (the proxy balances, retries and routes by prefix)."""
    import ray
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    bind = client.http_config.host  # replicas bind the proxy's host
    # without direct ingress the controller answers with the proxies' groups (app_name ""); with
    # Serve's HAProxy ingress, with HAProxy's unless asked as its manager is (Ray 2.60,
    # controller.get_target_groups: case 6 of its docstring)
    groups = ray.get(client._controller.get_target_groups.remote(name, from_proxy_manager=True))
    return [f"http://{t.ip if bind in ('0.0.0.0', '::', '', None) else bind}:{t.port}"
            for g in groups if g.app_name == name and str(g.protocol).endswith("HTTP") for t in g.targets]


def _wait_running(name: str, wait_s: float) -> None:
    from ray import serve

    deadline = time.monotonic() + wait_s
    while True:
        status = serve.status().applications.get(name)
        state = str(getattr(status, "status", "NOT_STARTED"))
        if state.endswith("RUNNING"):
            return
        if state.endswith("DEPLOY_FAILED") or time.monotonic() > deadline:
            msg = getattr(status, "message", "") if status else ""
            raise RuntimeError(f"serve app {name!r} is {state}: {msg}")
        time.sleep(0.5)


SHED_ADMISSION_WAIT_MS = 20.0
"""FeedArgs.admission_wait_ms of a graph deployed with ``--shed-port``: a request over a replica's
limit waits for a slot instead of being shed at once, so the shedding HAProxy, not Python, sheds
the excess (serve_apps.feed_admission)."""

SHED_AGENT_MS = 20.0
"""``--shed-agent-ms``: how often the shedding HAProxy asks each replica its admission limit."""


def gated_admission(wait_ms: float | None, agent_ms: float) -> dict[str, Any]:
    """FeedArgs' admission fields for replicas behind the shedding HAProxy: a wait for a slot
    (``wait_ms``, None: :data:`SHED_ADMISSION_WAIT_MS`) and, with agent checks on, the agent."""
    return {"admission_wait_ms": SHED_ADMISSION_WAIT_MS if wait_ms is None else wait_ms,
            "admission_agent": bool(agent_ms)}


SHED_ACTOR = "shed-{app}"
"""Name (namespace ``adray``) of the detached actor running app ``app``'s shedding HAProxy."""


def start_shed_proxy(name: str, settings: Any, route_prefix: str = "/") -> dict[str, Any]:
    """Start (or restart) the shedding HAProxy of app ``name`` as a detached actor on this node
    (adray.shed_proxy.ShedProxyActor); its info and ``host``, this node's address.

    Raises:
        RuntimeError: the app runs without Serve's direct ingress (nothing to put HAProxy in front
            of), or HAProxy did not start (its error).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from adray.shed_proxy import ShedProxyActor

    if not direct_urls(name):
        raise RuntimeError(f"app {name!r} has no direct-ingress replicas: the shedding proxy sends to the replicas' "
                           "own ports (clusters adray starts run Serve's direct ingress; see adray.runtime.SERVE_FAST_PATH)")
    stop_shed_proxy(name)
    node = ray.get_runtime_context().get_node_id()
    actor = ray.remote(num_cpus=0)(ShedProxyActor).options(
        name=SHED_ACTOR.format(app=name), namespace="adray", lifetime="detached",
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
            name, settings, direct_urls, route_prefix.rstrip("/") + "/v1/graph")
    try:
        info = ray.get(actor.info.remote(), timeout=120)
    except ray.exceptions.RayActorError as exc:
        raise RuntimeError(f"the shedding proxy did not start: {exc}") from None
    return {**info, "host": ray.util.get_node_ip_address()}


def stop_shed_proxy(name: str) -> bool:
    """Stop app ``name``'s shedding HAProxy, if one runs; True when one did."""
    import ray

    try:
        actor = ray.get_actor(SHED_ACTOR.format(app=name), namespace="adray")
    except ValueError:
        return False
    try:
        ray.get(actor.shutdown.remote(), timeout=30)
    finally:
        ray.kill(actor)
    return True


def http_url() -> str:
    """URL of the running Serve HTTP proxy (from the controller's HTTP options)."""
    from ray.serve.context import _get_global_client

    cfg = _get_global_client().http_config
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "", None) else cfg.host
    return f"http://{host}:{cfg.port}"


@serve_app.command("up")
def up(
    model: str = typer.Option(..., "--model", "-m", help="Registry reference name@version (any workload)."),
    replicas: int = typer.Option(1, "--replicas", help="Policy replicas."),
    replica_cpus: float = typer.Option(0.25, "--replica-cpus", help="CPUs reserved per policy replica."),
    max_batch_size: int = typer.Option(8, "--max-batch-size", help="@serve.batch size."),
    batch_wait_timeout_s: float = typer.Option(0.002, "--batch-wait-s", help="@serve.batch wait."),
    concat_batches: bool = typer.Option(False, "--concat-batches",
                                        help="One decide call per batch (faster, last-bit differences)."),
    registry: str = typer.Option(None, "--registry",
                                 help="Registry URI (default $ADRAY_REGISTRY, $ADRAY_STORAGE/registry or $ADRAY_HOME/registry)."),
    name: str = typer.Option("adray", "--name", help="Serve application name (one per model served at once)."),
    route_prefix: str = typer.Option("/", "--route-prefix", help="URL prefix of the application."),
    address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="HTTP bind host (first start of Serve only)."),
    port: int = typer.Option(8000, "--port", help="HTTP port (first start of Serve only)."),
) -> None:
    """Deploy a model's policy, or roll the app to a new model version (replicas replaced gracefully)."""
    from adray.runtime import ResourceError
    from adray.serving import ServeError, policy_meta, resolve_model
    from serve_apps.app import AppArgs

    try:
        args = AppArgs(model=model, registry=registry, num_replicas=replicas, replica_cpus=replica_cpus,
                       max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s,
                       concat_batches=concat_batches)
        url = serve_up(args, address=address, host=host, port=port, name=name, route_prefix=route_prefix)
        wl, _, _ = policy_meta(resolve_model(model, registry), registry)
    except (ServeError, ValueError, ResourceError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    prefix = route_prefix.rstrip("/")
    typer.echo(f"serving {model} at {url}{prefix}/v1/{wl.policy.route} (OpenAPI: {url}{prefix}/docs)")


_LATEST = ("name@alias, or none. Default: @serving of the workload whose policy answers that route (a version or "
           "@latest needs --unpromoted).")


@serve_app.command("graph")
def graph(
    ranking: str = typer.Option(None, "--ranking", help=f"Ranking model (answering /v1/rank): {_LATEST}"),
    bidding: str = typer.Option(None, "--bidding", help=f"Auto-bidding model (/v1/bid): {_LATEST}"),
    utility: str = typer.Option(None, "--utility", help=f"Utility model (/v1/utility): {_LATEST}"),
    allocation: str = typer.Option(None, "--allocation", help=f"Allocation model (/v1/allocate): {_LATEST}"),
    channel: str = typer.Option(None, "--channel", help=f"Channel model (/v1/channel): {_LATEST}"),
    mode: str = typer.Option("fused", "--mode", help="fused: one replica holds all stages; split: one deployment per stage."),
    replicas: int = typer.Option(2, "--replicas", help="Graph (ingress) replicas: one Python process each (one "
                                 "GIL); 2 on a 2-core node doubled the rate served within p99 30 ms (50 -> 100+/s)."),
    stage_replicas: int = typer.Option(1, "--stage-replicas", help="Replicas per stage (split mode)."),
    day_seconds: float = typer.Option(86400.0, "--day-seconds", help="Length of a pacing day in seconds."),
    state_uri: str = typer.Option(None, "--state-uri", help="Pacing ledger and decision log storage (path or s3://)."),
    registry: str = typer.Option(None, "--registry", help="Registry URI (default as for `serve up`)."),
    name: str = typer.Option("feed", "--name", help="Serve application name."),
    route_prefix: str = typer.Option("/", "--route-prefix", help="URL prefix of the application."),
    address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="HTTP bind host (first start of Serve only)."),
    port: int = typer.Option(8000, "--port", help="HTTP port (first start of Serve only)."),
    unpromoted: bool = typer.Option(False, "--unpromoted", help="Demos: serve versions that were never promoted "
                                    "(@latest, @vNNNN; an unset stage without @serving serves its latest)."),
    deadline_ms: float = typer.Option(None, "--deadline-ms", help="Each request's deadline (default 100) unless its "
                                      "x-deadline-ms header sets one; past it no stage starts (fallbacks), and a "
                                      "request that arrives past it is shed (503)."),
    max_in_flight: int = typer.Option(None, "--max-in-flight", help="Most requests a replica decides at once (8; the "
                                      "limit in force adapts below it to the CPU); more are shed: 503, Retry-After."),
    shed_port: int = typer.Option(None, "--shed-port", help="Also start adray's shedding HAProxy on this port of "
                                  "this node (adray.shed_proxy): at most --shed-per-replica requests reach a replica "
                                  "at once, the rest are answered 503 by HAProxy after --shed-queue-ms (at once with "
                                  "--shed-max-queue waiting)."),
    shed_per_replica: int = typer.Option(8, "--shed-per-replica", help="Requests a replica takes at once (--shed-port; "
                                         "with --shed-agent-ms, at most: the replica's limit in force sets it)."),
    shed_agent_ms: float = typer.Option(SHED_AGENT_MS, "--shed-agent-ms", help="HAProxy asks each replica's admission "
                                        "limit this often and sends it no more (--shed-port; 0: off, --shed-per-replica "
                                        "alone)."),
    shed_queue_ms: float = typer.Option(3.0, "--shed-queue-ms", help="Longest wait for a replica (--shed-port)."),
    shed_max_queue: int = typer.Option(16, "--shed-max-queue", help="Requests that may wait for a replica at once "
                                       "(--shed-port); one more is shed on arrival."),
    shed_buffer_kb: int = typer.Option(64, "--shed-buffer-kb", help="HAProxy's buffer (--shed-port): a request body up "
                                       "to this size is read before it is denied, so its connection stays open (0: off)."),
    shed_nice: int = typer.Option(0, "--shed-nice", help="HAProxy's niceness (--shed-port; Ray's workers run at 15; "
                                  "lowering it needs root or CAP_SYS_NICE, else it keeps 15)."),
    admission_wait_ms: float = typer.Option(None, "--admission-wait-ms", help="A request over a replica's limit waits "
                                            "this long for a slot before it is shed (default 0; with --shed-port "
                                            f"{SHED_ADMISSION_WAIT_MS:g}: the proxy then sheds the excess, not the "
                                            "replicas)."),
) -> None:
    """Deploy the composed feed graph (POST /v1/feed) from promoted models (@serving unless named)."""
    import pydantic

    from adray.runtime import ResourceError
    from adray.serving import ServeError
    from serve_apps.feed_app import FeedArgs

    extra = {k: v for k, v in (("deadline_ms", deadline_ms), ("max_in_flight", max_in_flight),
                               ("admission_wait_ms", admission_wait_ms)) if v is not None}  # unset: FeedArgs' defaults
    if shed_port is not None:
        extra.update(gated_admission(admission_wait_ms, shed_agent_ms))
    try:
        args = FeedArgs(ranking=ranking, bidding=bidding, utility=utility, allocation=allocation, channel=channel,
                        mode=mode, num_replicas=replicas, stage_replicas=stage_replicas, day_seconds=day_seconds,
                        state_uri=state_uri, registry=registry, serve_unpromoted=unpromoted, **extra)
        url = serve_graph(args, address=address, host=host, port=port, name=name, route_prefix=route_prefix)
    except (ServeError, ValueError, pydantic.ValidationError, ResourceError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    prefix = route_prefix.rstrip("/")
    typer.echo(f"feed graph at {url}{prefix}/v1/feed (OpenAPI: {url}{prefix}/docs; models: {url}{prefix}/v1/graph)")
    direct = direct_urls(name)
    if direct:
        typer.echo(f"  direct to its replicas (no proxy hop; spread requests over them): "
                   f"{', '.join(u + prefix + '/v1/feed' for u in direct)}")
    if shed_port is not None:
        from adray.shed_proxy import ShedSettings

        try:
            info = start_shed_proxy(name, ShedSettings(port=shed_port, per_replica=shed_per_replica,
                                                       queue_ms=shed_queue_ms, max_queue=shed_max_queue,
                                                       buffer_kb=shed_buffer_kb, agent_inter_ms=shed_agent_ms,
                                                       nice=shed_nice), route_prefix)
        except (ValueError, RuntimeError) as exc:
            typer.echo(f"error: --shed-port: {exc}", err=True)
            raise typer.Exit(2) from None
        queue = f"{shed_queue_ms:g} ms queue" + (f" of at most {shed_max_queue}" if shed_max_queue is not None else "")
        each = (f"at most {shed_per_replica} requests a replica, its admission limit asked every {shed_agent_ms:g} ms"
                if shed_agent_ms else f"{shed_per_replica} requests a replica")
        typer.echo(f"  shedding ingress (HAProxy, {each}, {queue}, "
                   f"niceness {info.get('nice')}): "
                   f"http://{info['host']}:{shed_port}{prefix}/v1/feed")


@serve_app.command("down")
def down(
    address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
    all_apps: bool = typer.Option(False, "--all", help="Shut Serve down entirely (all apps, proxies)."),
    name: str = typer.Option("adray", "--name", help="Serve application name."),
) -> None:
    """Delete the app (or, with --all, shut Serve down). The Ray cluster keeps running."""
    from ray import serve

    _connect_or_exit(address)
    if all_apps:
        serve.shutdown()
    else:
        serve.delete(name)
        stop_shed_proxy(name)
    typer.echo("serve: stopped" if all_apps else f"serve: app {name!r} deleted")


@serve_app.command("status")
def status(address: str = typer.Option(None, "--address", help=ADDRESS_HELP)) -> None:
    """Applications, their deployments and replica states."""
    from ray import serve

    _connect_or_exit(address)
    st = serve.status()
    if not st.applications:
        typer.echo("no Serve applications running")
        raise typer.Exit(1)
    typer.echo(f"http: {http_url()}")
    for app_name, app in st.applications.items():
        typer.echo(f"{app_name}: {app.status} {app.message}".rstrip())
        for dep_name, dep in app.deployments.items():
            replicas = ", ".join(f"{k}={v}" for k, v in dep.replica_states.items())
            typer.echo(f"  {dep_name}: {dep.status} ({replicas}) {dep.message}".rstrip())


# --------------------------------------------------------------------------- jobs


def submit(
    ctx: typer.Context,
    address: str = typer.Option(None, "--address", help=JOB_ADDRESS_HELP),
    wait: bool = typer.Option(False, "--wait", help="Stream the logs and exit with the job's status."),
    env: list[str] = typer.Option(None, "--env", help="KEY=VALUE for the job's environment (repeatable)."),
) -> None:
    """Submit an adray command as a Ray job: adray submit [--address URL] [--wait] -- adray train ..."""
    command = list(ctx.args)
    try:
        job_id = _jobs.submit(command, address=address, env_vars=_jobs.parse_env(env))
    except _jobs.JobError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"submitted job {job_id}")
    if not wait:
        typer.echo(f"follow it with: adray jobs logs {job_id} --address {_jobs.resolve_address(address)}")
        return
    code = _follow(job_id, address)
    typer.echo(f"job {job_id} {'succeeded' if code == 0 else f'failed (exit status {code})'}")
    raise typer.Exit(code)


def _follow(job_id: str, address: str | None) -> int:
    """The job's exit status after streaming its logs; Ctrl-C stops following (exit 130), not the job."""
    try:
        return _jobs.follow(job_id, address)
    except KeyboardInterrupt:
        typer.echo(f"\n[adray] stopped following job {job_id}; it keeps running on the cluster (stop it: "
                   f"adray jobs stop {job_id} --address {_jobs.resolve_address(address)})", err=True)
        raise typer.Exit(130) from None


@jobs_app.command("list")
def jobs_list(address: str = typer.Option(None, "--address", help=JOB_ADDRESS_HELP)) -> None:
    """Jobs on the cluster, newest first."""
    rows = _jobs.list_jobs(address)
    if not rows:
        typer.echo("no jobs")
    for r in rows:
        code = "" if r["exit_code"] is None else f" exit={r['exit_code']}"
        typer.echo(f"{r['id']}  {r['status']:<9}{code}  {r['entrypoint']}")


@jobs_app.command("logs")
def jobs_logs(
    job_id: str = typer.Argument(..., help="Submission id (from `adray submit` or `adray jobs list`)."),
    address: str = typer.Option(None, "--address", help=JOB_ADDRESS_HELP),
    follow: bool = typer.Option(False, "--follow", "-f", help="Follow until the job ends; exit with its status."),
) -> None:
    """Print (or follow) a job's output."""
    try:
        if follow:
            raise typer.Exit(_follow(job_id, address))
        typer.echo(_jobs.logs(job_id, address), nl=False)
    except _jobs.JobError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@jobs_app.command("stop")
def jobs_stop(
    job_id: str = typer.Argument(..., help="Submission id."),
    address: str = typer.Option(None, "--address", help=JOB_ADDRESS_HELP),
) -> None:
    """Stop a running job."""
    try:
        stopped = _jobs.stop(job_id, address)
    except _jobs.JobError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"job {job_id}: {'stop requested' if stopped else 'already finished'}")
