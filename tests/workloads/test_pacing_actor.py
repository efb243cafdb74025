"""The pacing ledger actor: concurrent callers never overspend one budget, and a restarted actor
restores the spend from its storage."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import ray

from adray.pacing import PacingSettings, get_ledger

pytestmark = pytest.mark.ray

SETTINGS = PacingSettings(steps_per_day=48, day_seconds=1e9, reserve_block=0.05)  # no midnight mid-test
SPEC = {"advertiser": "adv", "budget": 20.0, "cpa_constraint": 1.0, "task": 0}


@ray.remote(num_cpus=0)
def _replica(name: str, uri: str, seed: int) -> float:
    """One Serve replica's traffic: batches of won auctions, ~3x the budget in all; the sum granted."""
    import random

    actor = get_ledger(name, uri, "pacing/" + name, SETTINGS)
    rng, granted = random.Random(seed), 0.0
    ray.get(actor.views.remote([SPEC]))
    for _ in range(60):
        batch = [{"advertiser": "adv", "alpha": 1.0, "bid": 1.0, "pvalue": 0.5, "won": True,
                  "price": rng.choice([0.125, 0.25, 0.5]), "lwc": 0.1, "conversions": 0.5} for _ in range(3)]
        granted += sum(e["price"] for e, ok in zip(batch, ray.get(actor.settle.remote(batch)), strict=True) if ok)
    return granted


def test_concurrent_replicas_never_overspend_and_a_restart_keeps_the_spend(ray_cluster, tmp_path: Path) -> None:
    name, uri = f"pacing-test-{uuid.uuid4().hex[:8]}", str(tmp_path / "state")
    actor = get_ledger(name, uri, "pacing/" + name, SETTINGS)
    try:
        granted = sum(ray.get([_replica.remote(name, uri, seed) for seed in (1, 2)], timeout=60))
        assert granted <= SPEC["budget"]
        assert granted > SPEC["budget"] - 0.5  # the demand exceeded the budget: it was used up to a price
        assert ray.get(actor.stats.remote())["ceiling_writes"] <= 25  # not one write per charge
        with pytest.raises(ValueError, match="already runs with storage"):
            get_ledger(name, uri, "elsewhere", SETTINGS)

        ray.kill(actor, no_restart=False)
        # ray.kill returns before the actor is gone: a call may still reach the old incarnation (its
        # stats show writes) or meet the restart (ActorUnavailableError); wait for the new one
        deadline, view = time.monotonic() + 30, None
        while view is None:
            try:
                if ray.get(actor.stats.remote(), timeout=10)["writes"] == 0:  # a new incarnation
                    view = ray.get(actor.views.remote([SPEC]), timeout=10)["adv"]
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                pass
            if view is None:
                assert time.monotonic() < deadline, "the ledger actor did not come back within 30 s"
                time.sleep(0.2)
        assert granted <= view["spent"] <= SPEC["budget"]  # the spend came from storage
    finally:
        ray.kill(actor, no_restart=True)
