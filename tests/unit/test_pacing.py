"""The pacing ledger (no Ray, fake clock): days and steps from the clock, no overspend by interleaved
replicas nor across crashes, settle keys charged once and voids that refund them or void them
ahead, durable ceiling writes, history aggregates, and refusals of bad input and unreadable state."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from adray.pacing import HISTORY, STATE_FILE, Ledger, LedgerStateError, PacingSettings
from adray.storage import Storage

DAY = 100.0
T0 = 1_000 * DAY  # the start of day 1000
SETTINGS = PacingSettings(steps_per_day=10, day_seconds=DAY, reserve_block=0.1, snapshot_every_s=1.0)


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def spec(adv: str = "a", budget: float = 10.0) -> dict[str, Any]:
    return {"advertiser": adv, "budget": budget, "cpa_constraint": 2.0, "task": 1}


def event(adv: str = "a", won: bool = True, price: float = 1.0, **kw: Any) -> dict[str, Any]:
    return {"advertiser": adv, "alpha": 1.5, "bid": 2.0, "pvalue": 0.1, "won": won, "price": price,
            "lwc": price, "conversions": 0.1, **kw}


def ledger(tmp_path: Path | None = None, clock: Clock | None = None, settings: PacingSettings = SETTINGS,
           audit: bool = False) -> Ledger:
    return Ledger(Storage(tmp_path) if tmp_path else None, "pacing/test", settings, clock or Clock(), audit=audit)


def test_day_and_step_come_from_the_clock() -> None:
    clock = Clock(T0 + 25.0)
    led = ledger(clock=clock)
    v = led.views([spec()])["a"]
    assert (v["day"], v["step"], v["steps"]) == (1000, 2, 10)
    assert all(len(h) == 3 for h in v["history"].values())
    clock.t = T0 + DAY - 1e-6
    assert led.views([spec()])["a"]["step"] == 9
    clock.t = T0 + 7 * DAY + 10.0
    assert (led.views([spec()])["a"]["day"], led.views([spec()])["a"]["step"]) == (1007, 1)


def test_a_new_day_starts_every_advertiser_afresh() -> None:
    clock = Clock()
    led = ledger(clock=clock)
    led.views([spec(budget=10.0)])
    assert led.settle([event(price=4.0)]) == [True]
    clock.t += DAY + 35.0
    with pytest.raises(ValueError, match=r"events\[0\]\.advertiser 'a' is not registered today"):
        led.settle([event(price=1.0)])
    v = led.views([spec(budget=20.0)])["a"]  # registered again: today's budget applies
    assert (v["day"], v["step"], v["budget"], v["spent"], v["remaining"]) == (1001, 3, 20.0, 0.0, 20.0)
    assert all(h == [0.0] * 4 for h in v["history"].values())


def test_the_first_registration_of_the_day_holds() -> None:
    led = ledger()
    led.views([spec(budget=10.0)])
    v = led.views([{"advertiser": "a", "budget": 99.0, "cpa_constraint": 7.0, "task": 3}])["a"]
    assert (v["budget"], v["cpa_constraint"], v["task"]) == (10.0, 2.0, 1)


def test_history_aggregates_are_the_sums_of_the_events() -> None:
    clock = Clock()
    led = ledger(clock=clock)
    led.views([spec(budget=5.0)])
    led.settle([event(price=2.0, alpha=1.0, bid=3.0, pvalue=0.2, lwc=2.0, conversions=0.3),
                event(won=False, price=0.0, alpha=1.2, bid=1.0, pvalue=0.1, lwc=4.0, conversions=0.0)])
    clock.t += 2 * DAY / 10  # step 2; step 1 stays empty
    out = led.settle([event(price=2.5, alpha=0.5, bid=4.0, pvalue=0.4, lwc=2.5, conversions=0.5),
                      event(price=1.0, alpha=0.7, bid=2.0, pvalue=0.3, lwc=1.0, conversions=0.2),  # over budget
                      event(price=0.0, alpha=0.9, bid=0.0, pvalue=0.0, lwc=0.0, conversions=0.0)])  # free win
    assert out == [True, False, True]
    v = led.views([spec()])["a"]
    assert v["history"] == {"rows": [2, 0, 3], "bid_sum": [4.0, 0, 6.0], "pvalue_sum": [pytest.approx(0.3), 0, 0.7],
                            "wins": [1, 0, 2], "cost": [2.0, 0, 2.5], "conversions": [0.3, 0, 0.5],
                            "lwc_sum": [6.0, 0, 3.5], "alpha": [1.2, 0, 0.9]}
    assert (v["spent"], v["remaining"]) == (4.5, 0.5)
    assert led.stats()["refused"] == 1


@pytest.mark.parametrize("with_storage", [False, True])
def test_interleaved_replicas_never_overspend_and_use_the_budget(tmp_path: Path, with_storage: bool) -> None:
    rng = random.Random(7)
    led = ledger(tmp_path if with_storage else None)
    budgets = {"a": 50.0, "b": 13.7}
    led.views([spec(a, b) for a, b in budgets.items()])
    granted = {a: [] for a in budgets}
    refused = {a: [] for a in budgets}
    for _ in range(400):  # 3 replicas' batches, interleaved at random; demand ~4x the budgets
        batch = [event(rng.choice("ab"), won=rng.random() < 0.7, price=round(rng.uniform(0.01, 1.0), 3))
                 for _ in range(rng.randint(1, 3))]
        for e, ok in zip(batch, led.settle(batch), strict=True):
            if e["won"]:
                (granted if ok else refused)[e["advertiser"]].append(e["price"])
    views = led.views([spec(a, b) for a, b in budgets.items()])
    for a, budget in budgets.items():
        assert views[a]["spent"] <= budget
        assert math.fsum(granted[a]) == pytest.approx(views[a]["spent"], rel=1e-12)
        assert refused[a], "the demand exceeds the budget"
        assert budget - views[a]["spent"] < min(refused[a])  # no charge that still fitted was refused
    if with_storage:  # no write per charge: about one per block
        assert led.stats()["ceiling_writes"] <= 2 * (1 / SETTINGS.reserve_block) + 2


def test_a_crash_loses_no_spend(tmp_path: Path) -> None:
    rng = random.Random(1)
    clock = Clock()
    led = ledger(tmp_path, clock)
    led.views([spec(budget=100.0)])
    prices = [round(rng.uniform(0.1, 2.0), 2) for _ in range(30)]
    assert all(led.settle([event(price=p)]) == [True] for p in prices)
    true_spent = math.fsum(prices)
    del led  # a crash: no snapshot()
    v = ledger(tmp_path, clock).views([spec(budget=100.0)])["a"]
    assert true_spent <= v["spent"] <= true_spent + SETTINGS.reserve_block * 100.0 + max(prices) + 1e-9


def test_repeated_crashes_near_the_budget_never_overspend(tmp_path: Path) -> None:
    rng = random.Random(2)
    clock = Clock()
    total = 0.0
    for _ in range(40):  # each incarnation charges a little, then dies without a snapshot
        led = ledger(tmp_path, clock)
        led.views([spec(budget=10.0)])
        for _ in range(rng.randint(0, 4)):
            p = round(rng.uniform(0.05, 0.6), 2)
            total += p if led.settle([event(price=p)]) == [True] else 0.0
        clock.t += 0.01
    assert total <= 10.0 + 1e-9
    assert ledger(tmp_path, clock).views([spec(budget=10.0)])["a"]["spent"] <= 10.0


def test_history_is_snapshotted_at_most_every_snapshot_every_s(tmp_path: Path) -> None:
    clock = Clock()
    led = ledger(tmp_path, clock)
    led.views([spec()])
    led.settle([event(won=False, price=0.0)])
    assert led.stats()["writes"] == 0  # no spend yet, and not a second yet
    clock.t += 1.0
    led.settle([event(won=False, price=0.0)])
    assert led.stats()["writes"] == 1
    assert ledger(tmp_path, clock).views([spec()])["a"]["history"]["rows"][0] == 2
    led.settle([event(won=False, price=0.0)])
    led.snapshot()
    assert ledger(tmp_path, clock).views([spec()])["a"]["history"]["rows"][0] == 3


def test_a_failing_storage_refuses_charges_past_the_persisted_ceiling(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    led = ledger(tmp_path)
    led.views([spec(budget=10.0)])
    assert led.settle([event(price=1.0)]) == [True]  # ceiling 1 + 0.1 * 10 = 2
    monkeypatch.setattr(Storage, "write_text", lambda *a, **k: (_ for _ in ()).throw(OSError("disk gone")))
    assert led.settle([event(price=0.5), event(price=0.6)]) == [True, False]  # 1.5 fits under 2, 2.1 does not
    assert "disk gone" in led.stats()["last_error"]
    assert led.views([spec()])["a"]["spent"] == 1.5


def test_a_state_ahead_of_the_clock_is_kept(tmp_path: Path) -> None:
    clock = Clock(T0 + DAY + 1.0)
    led = ledger(tmp_path, clock)
    led.views([spec()])
    led.settle([event(price=3.0)])
    clock.t = T0 + DAY - 1.0  # a restart on a node whose clock lags behind midnight
    v = ledger(tmp_path, clock).views([spec()])["a"]
    assert (v["day"], v["step"]) == (1001, 0) and v["spent"] >= 3.0


def test_an_unreadable_state_file_is_an_error_naming_it(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    led.views([spec()])
    led.settle([event(price=1.0)])
    path = tmp_path / "pacing" / "test" / STATE_FILE
    doc = json.loads(path.read_text())
    path.write_text(path.read_text()[:-7])
    with pytest.raises(LedgerStateError, match=f"{path}.*cannot be read"):
        ledger(tmp_path)
    doc["advertisers"]["a"]["history"]["cost"] = [1.0]
    path.write_text(json.dumps(doc))
    with pytest.raises(LedgerStateError, match="history does not have 10 steps"):
        ledger(tmp_path)
    doc["advertisers"]["a"]["history"]["cost"] = [0.0] * 10
    path.write_text(json.dumps(doc))
    with pytest.raises(LedgerStateError, match="steps_per_day=10.*this ledger has steps_per_day=12"):
        ledger(tmp_path, settings=PacingSettings(steps_per_day=12, day_seconds=DAY))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("steps_per_day", 0, "steps_per_day must be a positive int"),
    ("steps_per_day", 4.0, "steps_per_day must be a positive int"),
    ("day_seconds", -1.0, "day_seconds must be a positive number of seconds"),
    ("reserve_block", 0.0, r"reserve_block must be a fraction of the budget in \(0, 1\]"),
    ("reserve_block", 1.5, "reserve_block must be"),
    ("snapshot_every_s", math.inf, "snapshot_every_s must be a positive number"),
])
def test_bad_settings_are_refused_by_name(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=f"PacingSettings.{message}"):
        PacingSettings(**{field: value})


@pytest.mark.parametrize(("bad", "message"), [
    ({"budget": 0.0}, r"specs\[1\]\.budget must be a finite number > 0"),
    ({"budget": math.nan}, r"specs\[1\]\.budget must be a finite number > 0"),
    ({"cpa_constraint": -2.0}, r"specs\[1\]\.cpa_constraint must be a finite number > 0"),
    ({"task": True}, r"specs\[1\]\.task must be an int >= 0"),
    ({"advertiser": ""}, r"specs\[1\]\.advertiser must be a non-empty string"),
    ({"cpa": 1.0}, r"specs\[1\] must be a dict with exactly the keys \['advertiser', 'budget', 'cpa_constraint', 'task'\], got \[.*'cpa'"),
])
def test_bad_specs_are_refused_by_index_and_field(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ledger().views([spec("ok"), {**spec("b"), **bad}])


@pytest.mark.parametrize(("bad", "message"), [
    ({"price": -1.0}, r"events\[1\]\.price must be a finite number >= 0"),
    ({"won": 1}, r"events\[1\]\.won must be a bool"),
    ({"lwc": math.inf}, r"events\[1\]\.lwc must be a finite number"),
    ({"advertiser": "zz"}, r"events\[1\]\.advertiser 'zz' is not registered today"),
    ("not a dict", r"events\[1\] must be a dict with exactly the keys"),
])
def test_bad_events_are_refused_and_none_recorded(bad: Any, message: str) -> None:
    led = ledger()
    led.views([spec()])
    with pytest.raises(ValueError, match=message):
        led.settle([event(price=1.0), {**event(), **bad} if isinstance(bad, dict) else bad])
    v = led.views([spec()])["a"]
    assert v["spent"] == 0.0 and v["history"]["rows"] == [0.0]
    assert set(v["history"]) == set(HISTORY)


# ------------------------------------------------------------------ settle keys and voids
def test_a_key_is_charged_once_and_its_void_refunds_it() -> None:
    led = ledger(audit=True)
    led.views([spec(budget=10.0)])
    assert led.settle([event(price=2.0, conversions=0.3), event(price=9.0)], key="g:0:r1") == [True, False]
    assert led.settle([event(price=2.0), event(price=1.0)], key="g:0:r1") == [True, False]  # a repeat: the first answer
    v = led.views([spec()])["a"]
    assert v["spent"] == 2.0 and v["history"]["wins"] == [1.0] and v["history"]["rows"] == [2.0]
    assert led.void("g:0:r1") == {"key": "g:0:r1", "state": "refunded", "refunded": 2.0}
    v = led.views([spec()])["a"]
    assert v["spent"] == 0.0 and v["history"]["wins"] == [0.0] and v["history"]["cost"] == [0.0]
    assert v["history"]["conversions"] == [pytest.approx(0.0)] and v["history"]["rows"] == [2.0]  # it was entered
    assert led.void("g:0:r1")["state"] == "void"  # idempotent: no second refund
    assert led.settle([event(price=1.0)], key="g:0:r1") == [False]  # a voided key grants nothing
    assert led.views([spec()])["a"]["spent"] == 0.0
    assert led.journal() == {"g:0:r1": {"grants": [["a", 2.0]], "void": True, "ran": True, "day": 1000}}
    s = led.stats()
    assert (s["voids"], s["refunded"], s["repeats"], s["late_settles"], s["refused"]) == (1, 2.0, 1, 1, 1)


def test_a_void_before_its_settle_makes_it_grant_nothing() -> None:
    led = ledger()
    led.views([spec(budget=10.0)])
    assert led.void("g:1:r2") == {"key": "g:1:r2", "state": "tombstone", "refunded": 0.0}
    assert led.settle([event(price=1.0), event(won=False, price=0.0)], key="g:1:r2") == [False, True]
    v = led.views([spec()])["a"]
    assert v["spent"] == 0.0 and v["history"]["rows"] == [0.0]  # nothing of the call recorded
    assert led.stats()["tombstones"] == 1 and led.stats()["late_settles"] == 1


def test_keys_are_kept_up_to_a_bound_and_the_journal_needs_audit() -> None:
    led = Ledger(None, "pacing/test", SETTINGS, Clock(), keys_kept=2)
    led.views([spec(budget=10.0)])
    for i in range(3):
        led.settle([event(price=1.0)], key=f"k{i}")
    assert led.stats()["keys"] == 2
    assert led.void("k0")["state"] == "tombstone"  # forgotten: nothing to refund (see the module docstring)
    assert led.void("k2")["refunded"] == 1.0
    assert led.views([spec()])["a"]["spent"] == 2.0
    with pytest.raises(ValueError, match="audit=True"):
        led.journal()
    with pytest.raises(ValueError, match="keys_kept must be >= 1"):
        Ledger(None, "p", SETTINGS, Clock(), keys_kept=0)


def test_a_void_after_midnight_refunds_nothing_of_yesterday() -> None:
    clock = Clock()
    led = ledger(clock=clock)
    led.views([spec(budget=10.0)])
    led.settle([event(price=3.0)], key="k")
    clock.t += DAY
    led.views([spec(budget=10.0)])
    assert led.void("k") == {"key": "k", "state": "refunded", "refunded": 0.0}
    assert led.views([spec()])["a"]["spent"] == 0.0  # today's account is untouched


def test_ceiling_writes_are_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, bool]] = []
    write = Storage.write_text

    def spy(self: Storage, text: str, *parts: str, durable: bool = False) -> None:
        calls.append((parts[-1], durable))
        write(self, text, *parts, durable=durable)

    monkeypatch.setattr(Storage, "write_text", spy)
    clock = Clock()
    led = ledger(tmp_path, clock)
    led.views([spec(budget=10.0)])
    led.settle([event(price=1.0)])  # raises the ceiling: a durable write
    clock.t += SETTINGS.snapshot_every_s
    led.settle([event(won=False, price=0.0)])  # history only: the periodic snapshot
    led.snapshot()
    # the periodic snapshot carries no new ceiling: if a host crash loses its rename, the file it
    # brings back has the same ceilings (and older history); an explicit snapshot is durable
    assert calls == [(STATE_FILE, True), (STATE_FILE, False), (STATE_FILE, True)]
