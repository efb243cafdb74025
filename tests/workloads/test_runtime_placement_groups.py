"""The driver-side reaper releases placement groups left behind by dead actors (what Ray Train's
PlacementGroupCleaner cannot do when a second local Ray runs on the machine) and nothing else."""

import time

import pytest
import ray
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

from adray.runtime import release_orphan_placement_groups


@ray.remote(num_cpus=0)
class _Creator:
    def make(self) -> str:
        pg = placement_group([{"CPU": 0.01}])
        ray.get(pg.ready())
        return pg.id.hex()


def _state(pg_hex: str) -> str:
    return placement_group_table(PlacementGroup(ray.PlacementGroupID.from_hex(pg_hex)))["state"]


def _release_until(pg_hex: str, timeout_s: float = 10.0) -> list[str]:
    removed: list[str] = []
    deadline = time.monotonic() + timeout_s
    while pg_hex not in removed and time.monotonic() < deadline:  # the GCS marks actors dead asynchronously
        removed += release_orphan_placement_groups()
        time.sleep(0.1)
    return removed


@pytest.mark.ray
def test_reaper_removes_groups_of_dead_actors_only(ray_cluster):
    mine = placement_group([{"CPU": 0.01}])  # created by the driver (as Tune's trial groups): kept
    ray.get(mine.ready())
    dead, alive = _Creator.remote(), _Creator.remote()
    orphan, kept = ray.get(dead.make.remote()), ray.get(alive.make.remote())
    assert _state(orphan) == "CREATED"  # Ray itself keeps it: the job is still alive
    ray.kill(dead)
    removed = _release_until(orphan)
    assert orphan in removed and _state(orphan) == "REMOVED"
    assert kept not in removed and _state(kept) == "CREATED"
    assert _state(mine.id.hex()) == "CREATED"
    remove_placement_group(mine)
    ray.kill(alive)
    assert kept in _release_until(kept)
