"""Ray start-up: an embedded local Ray sized to the machine, or a cluster via --address/RAY_ADDRESS.

Every entry point (the CLI, benchmarks, studies, tests) starts or joins Ray here, one way:
:func:`ensure_ray` (a new embedded Ray with ``address="local"``, never attaching to a stray
``ray start`` cluster or a stale address file on the host; or the cluster named by ``--address`` /
``RAY_ADDRESS``), or, for Serve's long-lived local cluster, :func:`running_head_address` (the
address file of a ``ray start`` cluster, checked to be alive).

Resources: a Ray job that asks for more than the cluster has waits forever instead of failing, and
fractional CPU accounting would start any number of worker processes on two cores. So every door
that asks for resources checks the request first against :func:`cluster_size` (the cluster's
resources, or its autoscaler's limits when there is one) with :func:`check_fits` /
:func:`check_train_workers`, and fails with a :class:`ResourceError` naming the option and the
numbers; harnesses size their actors with :func:`worker_cpus`.

Interrupts: :func:`stop_train_controller` is what a Ctrl-C does to a running Ray Train run;
:mod:`adray.interrupts` bounds what any Ctrl-C may take.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ray

log = logging.getLogger(__name__)


SERVE_FAST_PATH = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
}
"""Serve's throughput-optimised mode for the clusters adray starts (opt out: ``ADRAY_SERVE_FAST=0``).

Ray reads these once, at import, in every Serve process, so they must be in the environment the
cluster starts with (a running cluster keeps its own). What the mode changes (Ray 2.60,
``ray/serve/_private/constants.py``): each ingress replica also listens on its own HTTP port
(direct ingress, ports 30000-31000; the proxy on the configured port keeps working), handles and
the proxy use gRPC, user code runs on the replica's main loop, and the request-path log is
buffered and not copied to stderr. Measured on the feed graph at 50 requests/s on 2 cores
(``benchmarks/graph_load.py``), CPU per request: through the proxy, replica 10.7 ms + proxy actor
5.1 ms; to the replica's own port, replica 7.7 ms and no proxy. A stopped ingress replica drains its direct
port for ``..._MIN_DRAINING_PERIOD_S`` (Ray's default, 30 s, is for external load balancers that
deregister it; nothing here does, and a 30 s stop makes every redeploy slow)."""


INGRESSES = ("proxy", "haproxy")
"""What listens on Serve's HTTP port of a cluster adray starts (``ADRAY_SERVE_INGRESS``): ``proxy``,
Serve's Python proxy actor, or ``haproxy``, Serve's HAProxy ingress (``adray.haproxy``: HAProxy in
C routes each app's prefix straight to its replicas' direct ports). Either way each replica also
answers on its own port (direct ingress). Measured side by side with ``benchmarks/graph_load.py``
(``--path``; the README's feed-graph section has the table): on 2 cores at 100 req/s the feed graph
answered p99 52 ms through HAProxy and collapsed through the Python proxy (32 answers/s in time).
``ray start`` clusters that ``adray serve`` starts and ``cluster.yaml``'s nodes run HAProxy; the
embedded Ray of a job or a test session keeps the Python proxy (HAProxy's stats and metrics ports,
8404 and 9101, are per host: two clusters or nodes on one host would fight over them)."""


def serve_fast_path_env(default_ingress: str = "proxy") -> dict[str, str]:
    """The Serve settings a cluster adray starts gets (:data:`SERVE_FAST_PATH`, and the ingress's,
    :data:`INGRESSES`); {} when opted out. A value already in the environment wins.

    Raises:
        ValueError: ``ADRAY_SERVE_INGRESS`` names no ingress.
        RuntimeError: the HAProxy ingress is asked for and no haproxy binary can be had.
    """
    if os.environ.get("ADRAY_SERVE_FAST", "1") == "0":
        return {}
    env = dict(SERVE_FAST_PATH)
    ingress = os.environ.get("ADRAY_SERVE_INGRESS", default_ingress)
    if ingress not in INGRESSES:
        raise ValueError(f"ADRAY_SERVE_INGRESS={ingress!r}: expected one of {', '.join(INGRESSES)}")
    if ingress == "haproxy":
        from adray.haproxy import ensure_haproxy, haproxy_env

        env.update(haproxy_env(ensure_haproxy()))
    return {k: os.environ.get(k, v) for k, v in env.items()}


API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"


def own_dashboard(host: str = "127.0.0.1") -> tuple[int, dict[str, str]]:
    """A free port for the dashboard of a cluster adray starts, and the environment its processes
    must start with to find that dashboard: ``RAY_API_SERVER_ADDRESS``.

    Ray's state API (``ray.util.state``), asked without an address, finds "the" local cluster: the
    one in Ray's address file (the last ``ray start`` on this host), else the only GCS process
    running. Ray Train's placement-group cleaner asks it, from inside the cluster, whether the
    training controller is alive. With a second cluster on the host it asked the other cluster
    (or failed on two GCS processes), was told the controller was gone and removed the workers'
    placement group: a Tune trial of a sweep on the embedded Ray was killed when
    ``benchmarks/multinode.py`` started its clusters (issue 22's sweep). A cluster whose processes
    carry this variable asks its own dashboard.
    """
    with socket.socket() as sock:
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    return port, {API_SERVER_ENV: f"http://{host}:{port}"}


class ResourceError(RuntimeError):
    """The request cannot fit the cluster (it would wait forever), or is not a count at all."""


_embedded = False
"""Whether this process started the Ray it is connected to (then it has no autoscaler)."""


def ensure_ray(address: str | None = None, num_cpus: int | None = None,
               runtime_env: dict[str, Any] | None = None) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start a new local Ray sized to the machine.

    The one way every entry point starts or joins Ray. A local start is ``address="local"``: a new
    cluster of this process, even when a ``ray start`` cluster runs on the host or a stopped one left
    its address file behind (``ray.init()`` without an address attaches to either, and then dies on
    ``num_cpus``, which a connecting driver may not give). Idempotent: an already-initialised Ray
    (e.g. the test session's) is reused.
    """
    global _embedded
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if address:
        ray.init(address=address, log_to_driver=True, configure_logging=False, runtime_env=runtime_env)
    else:
        os.environ.update(serve_fast_path_env())  # the local cluster's processes inherit them
        # The dashboard stays on: Train V2's PlacementGroupCleaner asks the State API (served by
        # the dashboard) whether a controller died; without it a stopped Tune trial's worker
        # placement group is never released and the next trial waits for CPUs forever. Its port
        # is chosen here so the cluster's processes ask this dashboard (own_dashboard); the
        # variable is the cluster's, not this driver's (which may later join another cluster).
        port, env = own_dashboard()
        before = os.environ.get(API_SERVER_ENV)
        os.environ.update(env)
        try:
            ray.init(
                address="local",  # a new cluster: never attach to a stray `ray start` one on this host
                num_cpus=num_cpus or os.cpu_count() or 1,
                log_to_driver=False,
                configure_logging=False,
                logging_level=logging.WARNING,
                runtime_env=runtime_env,
                include_dashboard=True,
                dashboard_port=port,
            )
        finally:
            if before is None:
                os.environ.pop(API_SERVER_ENV, None)
            else:
                os.environ[API_SERVER_ENV] = before
        _embedded = True


def running_head_address() -> str | None:
    """The GCS address of the ``ray start`` cluster on this host (its address file), if it is alive.

    A stopped cluster can leave the file behind (``ray stop`` after a crash, a killed head, another
    ``RAY_TMPDIR``): its address is then refused here (nothing listens on its port) instead of making
    ``ray.init`` wait for a GCS that never answers. ``ray.init(address="auto")`` is not used: with no
    address file it attaches to *any* Ray found on the host, e.g. another command's embedded one.
    """
    from ray._common.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    try:
        address = path.read_text().strip()
    except OSError:
        return None
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2.0):
            return address
    except (OSError, ValueError):
        log.warning("%s names %s, but no Ray cluster answers there (a stale address file of a stopped "
                    "`ray start`); ignoring it", path, address or "nothing")
        return None


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 0.0))


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))


# ----------------------------------------------------------------------------- the cluster's size


@dataclasses.dataclass(frozen=True)
class ClusterSize:
    """The most of each resource the cluster can hold, and where that number comes from."""

    resources: dict[str, float]
    source: str
    """For messages, e.g. ``ray.cluster_resources(); no autoscaler``."""
    autoscaling: bool = False

    def get(self, resource: str) -> float:
        return float(self.resources.get(resource, 0.0))

    def describe(self, resource: str) -> str:
        return f"{'at most ' if self.autoscaling else ''}{_amount(self.get(resource), resource)} ({self.source})"


AUTOSCALING_CONFIG_ENV = "ADRAY_AUTOSCALING_CONFIG"
"""Path of a cluster launcher YAML whose node types bound the cluster (default, on a cluster this
process joined: the head node's ``~/ray_bootstrap_config.yaml``, which ``ray up`` writes)."""


def cluster_size() -> ClusterSize:
    """:func:`ray.cluster_resources`, raised to the autoscaler's limits when the cluster has one.

    Ray 2.60 exposes the limits two ways, tried in order: the cluster config in the GCS (node groups
    x max count, capped by the cluster's max resources) that an autoscaler reports and that Ray Train
    itself checks before placing workers (``ray._private.state.state
    .get_max_resources_from_cluster_config``, private); and, for the cluster launcher (``ray up``,
    ``cluster.yaml``), whose monitor does not report it there, the launcher's YAML on the head node
    (node types' ``resources`` x ``max_workers``, capped by the top-level ``max_workers``). An embedded
    Ray never autoscales.
    """
    now = {k: float(v) for k, v in ray.cluster_resources().items()}
    limits, source = _autoscaler_limits()
    if limits is None:
        return ClusterSize(now, "ray.cluster_resources(); no autoscaler")
    merged = {k: max(now.get(k, 0.0), float(limits.get(k, 0.0))) for k in set(now) | set(limits)}
    return ClusterSize(merged, source, autoscaling=True)


def _autoscaler_limits() -> tuple[dict[str, float] | None, str]:
    if _embedded and not os.environ.get(AUTOSCALING_CONFIG_ENV):
        return None, ""
    try:
        from ray._private.state import state

        gcs = state.get_max_resources_from_cluster_config()
    except Exception as e:  # private API: an older/newer Ray or a GCS without the key
        log.debug("no cluster config in the GCS: %s", e)
        gcs = None
    if gcs:
        return {k: float(v) for k, v in gcs.items()}, "the autoscaler's limits in the GCS cluster config"
    path = Path(os.environ.get(AUTOSCALING_CONFIG_ENV) or Path.home() / "ray_bootstrap_config.yaml")
    if not path.is_file():
        return None, ""
    return launcher_limits(path), f"the autoscaler's limits in {path}"


def launcher_limits(path: Path | str) -> dict[str, float]:
    """The most of each resource a cluster launcher config lets the cluster reach.

    The head node's resources plus, per resource, the worker node types richest in it filled up to
    their own ``max_workers`` and the config's total ``max_workers``. A node type without declared
    ``resources`` (the launcher detects them from the instance type) makes every resource unbounded
    (``inf``): nothing can be refused on that config's word.
    """
    import yaml

    raw = yaml.safe_load(Path(path).read_text()) or {}
    types: dict[str, Any] = raw.get("available_node_types") or {}
    head = raw.get("head_node_type")
    total_max = int(raw.get("max_workers", sum(int(t.get("max_workers", 0)) for t in types.values())))
    if any("resources" not in t for t in types.values()):
        return {"CPU": math.inf, "GPU": math.inf}
    keys = {k for t in types.values() for k in t["resources"]}
    out = {}
    for key in keys:
        amount = float(types.get(head, {}).get("resources", {}).get(key, 0.0)) if head else 0.0
        left = total_max
        workers = sorted(((float(t["resources"].get(key, 0.0)), int(t.get("max_workers", 0)))
                          for name, t in types.items() if name != head), reverse=True)
        for per_node, count in workers:
            n = min(count, left)
            amount, left = amount + n * per_node, left - n
        out[key] = amount
    return out


def _amount(x: float, resource: str) -> str:
    """``64 CPUs``, ``1 GPU``, ``0.5 CPU``, ``unbounded CPUs``."""
    return f"{'unbounded' if math.isinf(x) else f'{x:g}'} {resource}{'' if x <= 1 else 's'}"


def check_fits(option: str, asked: Mapping[str, float], what: str, hint: str = "") -> None:
    """Refuse ``asked`` (``{"CPU": 64}``) when it exceeds what the cluster has or can scale to.

    Raises:
        ResourceError: ``"{option}: {what} need 64 CPUs, but the cluster has 2 CPUs (where that
            number comes from); {hint}"``.
    """
    size = cluster_size()
    for resource, amount in asked.items():
        if amount > 0 and amount > size.get(resource) + 1e-9:
            raise ResourceError(f"{option}: {what} need {_amount(amount, resource)}, but the cluster has "
                                f"{size.describe(resource)}" + (f"; {hint}" if hint else ""))


def check_count(option: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise ResourceError(f"{option} {value}: expected an integer >= {minimum}")


def check_train_workers(num_workers: int, use_gpu: bool = False, option: str = "--workers",
                        what: str = "") -> None:
    """Refuse a Ray Train worker group the cluster can never hold, before anything starts.

    Each worker is one process running the training loop (torch and its data share, one torch
    thread): it gets one CPU of the cluster (and one GPU with ``--gpu``). Fractional CPU accounting
    would otherwise place 64 workers on 2 cores (issue 20: 62+ processes, ~15 GB, no progress).
    """
    check_count(option, num_workers)
    each = "one CPU and one GPU" if use_gpu else "one CPU"
    what = what or f"{num_workers} Ray Train worker{'s' if num_workers > 1 else ''} ({each} each)"
    size = cluster_size()
    fits = min(size.get("CPU"), size.get("GPU") if use_gpu else math.inf)
    fewer = f"use {option} {int(fits)} or fewer, or " if 1 <= fits < math.inf else "use "
    check_fits(f"{option} {num_workers}", {"CPU": num_workers, "GPU": num_workers if use_gpu else 0}, what,
               fewer + "a bigger cluster (--address)")


def torch_threads() -> int:
    """Torch intra-op threads for one training process: ``OMP_NUM_THREADS``, else 1.

    On a small shared machine torch's default (one thread per core) in every worker or learner
    oversubscribes the cores; measured 844 ms vs 102 ms per Cross DQN step under load."""
    return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))


def worker_cpus(num_workers: int, reserve: float = 0.0) -> float:
    """CPUs to give each of ``num_workers`` actors so they all fit beside ``reserve`` CPUs.

    One full CPU each when the cluster has (or can scale to) room; otherwise an even fraction (Ray
    schedules by accounting only, so fractional CPUs still run on the real cores).
    """
    check_count("--workers", num_workers)
    total = cluster_size().get("CPU") - reserve
    if total <= 0:
        raise ResourceError(f"the cluster has {cluster_cpus():g} CPUs; {reserve:g} are reserved")
    return 1.0 if total >= num_workers else round(total / num_workers, 3)


PLACEMENTS = ("pack", "spread", "strict_spread")
"""Where Ray Train workers go (``TrainContext.placement``, ``--placement``)."""


def check_placement(placement: str) -> Any:
    """``placement`` if it is one of :data:`PLACEMENTS`.

    Raises:
        ResourceError: anything else, naming the option and what it accepts.
    """
    if placement not in PLACEMENTS:
        raise ResourceError(f"--placement {placement!r}: expected one of {', '.join(PLACEMENTS)}")
    return placement


def node_cpus() -> list[float]:
    """CPUs of each alive node that has any."""
    return sorted((float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes()
                   if n.get("Alive") and n["Resources"].get("CPU", 0.0) > 0), reverse=True)


def placed_worker_cpus(cpus: float, num_workers: int, placement: str, reserve: float = 0.0) -> float:
    """Each Train worker's CPUs (at most ``cpus``) so that the workers fit the nodes as ``placement``
    puts them and one node keeps ``reserve`` CPUs free (Ray Data's file listing is one task of one whole
    CPU, on one node: counted over the whole cluster, a reserve split over nodes leaves it waiting
    forever). ``pack``: as given (Ray packs the bundles, which leaves the other nodes' CPUs whole).
    ``spread`` / ``strict_spread``: the busiest of the largest nodes hosts ceil(workers / nodes)
    workers beside the reserve. An autoscaling cluster is taken as it is (its future nodes are unknown).

    Raises:
        ResourceError: ``strict_spread`` with fewer nodes than workers, or no node that can hold its
            workers beside ``reserve`` CPUs.
    """
    if placement == "pack" or cluster_size().autoscaling:
        return cpus
    nodes = node_cpus()
    if placement == "strict_spread" and len(nodes) < num_workers:
        raise ResourceError(f"--placement strict_spread: {num_workers} Ray Train workers need {num_workers} nodes "
                            f"with CPUs, but the cluster has {len(nodes)}; use --placement spread or pack, or "
                            "fewer --workers")
    per_node = math.ceil(num_workers / max(1, len(nodes)))
    room = (nodes[0] - reserve) / per_node if nodes else 0.0
    if room <= 0:
        raise ResourceError(f"--placement {placement}: streaming needs one node with {reserve:g} CPU free beside its "
                            f"{per_node} Ray Train worker(s) for Ray Data's file listing, but the largest node has "
                            f"{nodes[0] if nodes else 0:g} CPUs; use --placement pack or ingest=memory")
    return min(cpus, round(room, 3))


def stop_train_controller(controller: Any, timeout_s: float = 5.0) -> None:
    """Stop a Ray Train V2 run at once: kill its controller and release its placement group.

    The controller owns the worker actors, so they die with it; the placement group it made is
    removed here as soon as Ray reports the controller dead (Ray itself would keep it until the job
    ends). Ray Train's own Ctrl-C handler instead waits for the controller's ``abort`` without a
    limit, which never returns while the controller is busy (starting workers); a second Ctrl-C is
    then swallowed and a third exits with status 0.
    """
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    with contextlib.suppress(Exception):  # already dead
        ray.kill(controller, no_restart=True)
    creator = controller._actor_id.binary()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        mine = [pg for pg in _placement_group_table() if pg.creator_actor_id == creator
                and pg.state != gcs_pb2.PlacementGroupTableData.REMOVED]
        if all(pg.creator_actor_dead for pg in mine):
            for pg in mine:
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(pg.placement_group_id)))
            return
        time.sleep(0.1)
    log.warning("the stopped Ray Train controller is not reported dead after %.0f s; its placement group is "
                "left to Ray (released when this job ends)", timeout_s)


def _placement_group_table() -> list[Any]:
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    return [gcs_pb2.PlacementGroupTableData.FromString(raw)  # private in 2.60
            for raw in state._connect_and_get_accessor().get_placement_group_table()]


def release_orphan_placement_groups() -> list[str]:
    """Remove every non-detached placement group whose creating actor is dead; returns their ids.

    Ray Train V2 creates the worker placement group from its controller actor, and Ray keeps such
    a group until the whole job ends. Train's detached PlacementGroupCleaner is meant to remove it
    when the controller dies (a Tune trial stopped by ASHA), but it asks the State API without an
    address, which fails ("Found multiple active Ray instances") whenever a second local Ray runs
    on the machine; the next trial then waits for CPUs forever. The driver knows its cluster, so
    it applies the same rule itself. Groups made by the driver (Tune's trial groups) are skipped.
    """
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    gone = (gcs_pb2.PlacementGroupTableData.REMOVED,)
    removed = []
    for pg in _placement_group_table():
        if pg.is_detached or pg.state in gone or not pg.creator_actor_dead:
            continue
        if ray.ActorID(pg.creator_actor_id).is_nil():  # created by a driver, not an actor
            continue
        pg_id = ray.PlacementGroupID(pg.placement_group_id)
        remove_placement_group(PlacementGroup(pg_id))
        removed.append(pg_id.hex())
    if removed:
        log.warning("released %d placement group(s) left by dead actors: %s", len(removed), removed)
    return removed


@contextlib.contextmanager
def orphan_placement_group_reaper(interval_s: float = 5.0) -> Iterator[None]:
    """Run :func:`release_orphan_placement_groups` every ``interval_s`` while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                release_orphan_placement_groups()
            except Exception as e:  # a failed sweep of the table must not kill the driver
                log.warning("placement group reaper: %s", e)

    t = threading.Thread(target=loop, name="adray-pg-reaper", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=interval_s + 5)
