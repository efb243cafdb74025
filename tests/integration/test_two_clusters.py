"""Two Ray clusters on one host: the cluster adray starts asks its own dashboard (adray.runtime.own_dashboard).

Ray Train's placement-group cleaner asks Ray's state API, from inside the cluster, whether the
training controller is alive. Asked without an address, the state API takes the cluster in Ray's
address file (the last one started on this host) or, without one, fails on two GCS processes; a
second cluster on the host (``benchmarks/multinode.py``, ``adray serve`` with ``ray start``) made
it answer "no such actor" for a live controller, and the cleaner removed a running Tune trial's
placement group. Here a second cluster is started beside the test session's (its address in Ray's
address file), and a task of the session's cluster looks up one of its actors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.ray


def test_a_task_finds_its_own_clusters_actor_with_another_cluster_on_the_host(ray_cluster: Any) -> None:
    import ray
    from ray._common.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    from adray.runtime import API_SERVER_ENV

    @ray.remote(num_cpus=0)
    class Alive:
        def ping(self) -> int:
            return 1

    def _lookup(actor_id: str) -> str | None:  # defined here: pickled by value for the workers
        from ray.util.state import get_actor

        try:
            state = get_actor(actor_id, timeout=15)
        except Exception as exc:  # noqa: BLE001 - what the cleaner would have seen
            return f"{type(exc).__name__}"
        return None if state is None else state.state

    actor = Alive.remote()
    ray.get(actor.ping.remote())
    actor_id = actor._actor_id.hex()
    lookup = ray.remote(num_cpus=0)(_lookup)
    own = ray.get(ray.remote(num_cpus=0)(lambda: __import__("os").environ.get(API_SERVER_ENV)).remote())
    assert own and own.startswith("http://127.0.0.1:"), own
    assert ray.get(lookup.remote(actor_id)) == "ALIVE"

    address_file = Path(get_ray_address_file(None))
    before = address_file.read_text() if address_file.is_file() else None
    other = Cluster()
    try:
        other.add_node(num_cpus=0, include_dashboard=True, dashboard_port=free_port(), gcs_server_port=free_port())
        assert address_file.read_text().strip() == other.address  # "the" local cluster is now the other one
        assert ray.get(lookup.remote(actor_id)) == "ALIVE"  # asked its own dashboard
        # the hazard itself: a process of the same cluster without the variable asks the other one
        blind = lookup.options(runtime_env={"env_vars": {API_SERVER_ENV: ""}})
        assert ray.get(blind.remote(actor_id)) != "ALIVE"
    finally:
        other.shutdown()
        if before is None:
            address_file.unlink(missing_ok=True)
        else:
            address_file.write_text(before)
        ray.kill(actor)
