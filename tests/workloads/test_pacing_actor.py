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


def _won(price: float) -> dict[str, object]:
    return {"advertiser": "adv", "alpha": 1.0, "bid": 1.0, "pvalue": 0.5, "won": True, "price": price, "lwc": 0.1,
            "conversions": 0.5}


def test_a_void_sent_right_after_its_settle_always_finds_it_done(ray_cluster) -> None:
    """Ray runs one caller's calls to the synchronous actor in submission order: the void never
    overtakes its settle (the ledger's tombstones cover other orders; tests/unit/test_ledger_invariants)."""
    name = f"pacing-test-{uuid.uuid4().hex[:8]}"
    actor = get_ledger(name, None, "pacing/" + name, SETTINGS)
    try:
        ray.get(actor.views.remote([SPEC]))
        refs = []
        for i in range(100):  # sent without waiting: each void queued right behind its settle
            refs.append(actor.settle.remote([_won(0.125)], f"k{i}"))
            refs.append(actor.void.remote(f"k{i}"))
        out = ray.get(refs, timeout=60)
        assert [o["state"] for o in out[1::2]] == ["refunded"] * 100
        assert ray.get(actor.views.remote([SPEC]))["adv"]["spent"] == 0.0
    finally:
        ray.kill(actor, no_restart=True)


def test_kill_9_of_the_ledger_worker_keeps_every_granted_charge(ray_cluster, tmp_path: Path) -> None:
    import os
    import random
    import signal

    name, uri = f"pacing-test-{uuid.uuid4().hex[:8]}", str(tmp_path / "state")
    spec = {**SPEC, "budget": 1000.0}
    actor = get_ledger(name, uri, "pacing/" + name, SETTINGS)
    try:
        ray.get(actor.views.remote([spec]))
        pid = ray.get(actor.pid.remote())
        rng = random.Random()
        prices = [rng.choice([0.5, 1.0, 2.0]) for _ in range(600)]
        kill_at, refs = rng.randrange(100, 400), []
        for i, p in enumerate(prices):  # sent faster than the actor runs them: a queue builds up
            refs.append(actor.settle.remote([_won(p)], f"k{i}"))
            if i == kill_at:
                os.kill(pid, signal.SIGKILL)  # the worker process, as the OOM killer or a crash would
        granted, cut = 0.0, 0
        for p, ref in zip(prices, refs, strict=True):
            try:
                granted += p if ray.get(ref, timeout=60) == [True] else 0.0
            except ray.exceptions.RayError:  # cut by the crash: the caller shows none of its ads
                cut += 1
        assert cut > 0, "the kill came after every call: nothing was cut"
        deadline, view = time.monotonic() + 60, None
        while view is None:
            try:
                if ray.get(actor.pid.remote(), timeout=10) != pid:
                    view = ray.get(actor.views.remote([spec]), timeout=10)["adv"]
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                pass
            if view is None:
                assert time.monotonic() < deadline, "the ledger actor did not come back within 60 s"
                time.sleep(0.2)
        # every charge a caller was told about is still spent; at most a block (+ the cut calls) more
        assert granted <= view["spent"] <= min(spec["budget"], granted + SETTINGS.reserve_block * spec["budget"] + 2.0 * cut)
        # a void of the old incarnation's key refunds nothing: its grant is inside that reservation
        assert ray.get(actor.void.remote("k0"))["state"] == "tombstone"
    finally:
        ray.kill(actor, no_restart=True)
