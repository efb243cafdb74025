"""Ray start-up: an embedded local Ray sized to the machine, or a cluster via --address/RAY_ADDRESS.

Resource pinning for small machines lives here so that nothing deadlocks on 2 CPUs: a Ray job
that asks for more CPUs than the cluster has waits forever instead of failing, so every harness
asks :func:`cluster_cpus` and sizes its actors with :func:`worker_cpus`.
"""

from __future__ import annotations

import logging
import os
import warnings

import ray

log = logging.getLogger(__name__)


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
        # The dashboard stays on: Train V2's PlacementGroupCleaner asks the State API (served by
        # the dashboard) whether a controller died; without it a stopped Tune trial's worker
        # placement group is never released and the next trial waits for CPUs forever.
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 1,
            log_to_driver=False,
            configure_logging=False,
            logging_level=logging.WARNING,
        )


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 0.0))


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))


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
