"""Ray start-up: an embedded local Ray sized to the machine, or a cluster via --address/RAY_ADDRESS.

Resource pinning for small machines lives here so that nothing deadlocks on 2 CPUs: a Ray job
that asks for more CPUs than the cluster has waits forever instead of failing, so every harness
asks :func:`cluster_cpus` and sizes its actors with :func:`worker_cpus`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator

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


def serve_fast_path_env() -> dict[str, str]:
    """The Serve settings a cluster adray starts gets (:data:`SERVE_FAST_PATH`); {} when opted out.
    A value already in the environment wins."""
    if os.environ.get("ADRAY_SERVE_FAST", "1") == "0":
        return {}
    return {k: os.environ.get(k, v) for k, v in SERVE_FAST_PATH.items()}


class ResourceError(RuntimeError):
    """The request cannot fit the cluster (it would wait forever)."""


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start a local Ray sized to the machine.

    Idempotent: an already-initialised Ray (e.g. the test session's) is reused.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if address:
        ray.init(address=address, log_to_driver=True, configure_logging=False)
    else:
        os.environ.update(serve_fast_path_env())  # the local cluster's processes inherit them
        # The dashboard stays on: Train V2's PlacementGroupCleaner asks the State API (served by
        # the dashboard) whether a controller died; without it a stopped Tune trial's worker
        # placement group is never released and the next trial waits for CPUs forever.
        ray.init(
            address="local",  # a new cluster: never attach to a stray `ray start` one on this host
            num_cpus=num_cpus or os.cpu_count() or 1,
            log_to_driver=False,
            configure_logging=False,
            logging_level=logging.WARNING,
        )


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 0.0))


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))


def torch_threads() -> int:
    """Torch intra-op threads for one training process: ``OMP_NUM_THREADS``, else 1.

    On a small shared machine torch's default (one thread per core) in every worker or learner
    oversubscribes the cores; measured 844 ms vs 102 ms per Cross DQN step under load."""
    return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))


def worker_cpus(num_workers: int, reserve: float = 0.0) -> float:
    """CPUs to give each of ``num_workers`` actors so they all fit beside ``reserve`` CPUs.

    One full CPU each when the cluster has room; otherwise an even fraction (Ray schedules by
    accounting only, so fractional CPUs still run on the real cores).
    """
    total = cluster_cpus() - reserve
    if num_workers < 1:
        raise ResourceError(f"--workers={num_workers}: expected >= 1")
    if total <= 0:
        raise ResourceError(f"the cluster has {cluster_cpus()} CPUs; {reserve} are reserved")
    return 1.0 if total >= num_workers else round(total / num_workers, 3)


def release_orphan_placement_groups() -> list[str]:
    """Remove every non-detached placement group whose creating actor is dead; returns their ids.

    Ray Train V2 creates the worker placement group from its controller actor, and Ray keeps such
    a group until the whole job ends. Train's detached PlacementGroupCleaner is meant to remove it
    when the controller dies (a Tune trial stopped by ASHA), but it asks the State API without an
    address, which fails ("Found multiple active Ray instances") whenever a second local Ray runs
    on the machine; the next trial then waits for CPUs forever. The driver knows its cluster, so
    it applies the same rule itself. Groups made by the driver (Tune's trial groups) are skipped.
    """
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    gone = (gcs_pb2.PlacementGroupTableData.REMOVED,)
    removed = []
    for raw in state._connect_and_get_accessor().get_placement_group_table():  # private in 2.60
        pg = gcs_pb2.PlacementGroupTableData.FromString(raw)
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
