"""Pacing state of auto-bidding advertisers: budgets, spend and the day's per-step aggregates.

The serving graph reads each auto-bidding advertiser's view (budget, spend, the per-step history
that the bidding model turns into AuctionNet states) before an auction and settles the charges
after it. One Ray actor (:func:`get_ledger`) owns the :class:`Ledger` of every advertiser, so all
Serve replicas draw on one budget each; its state is one JSON file, ``<prefix>/ledger.json`` in a
:class:`~adray.storage.Storage`, from which a restarted actor goes on.

Day ``floor(t / day_seconds)``, step ``floor((t mod day_seconds) / (day_seconds / steps_per_day))``
of the clock. A new day forgets every advertiser; its next view registers it afresh. The day never
goes backwards: a state written under a clock running ahead is kept until ours catches up.

Guarantees and how they are kept:

* No overspend: a charge is granted only if ``spent + price <= budget``. The actor is synchronous
  (Ray runs one of its methods at a time): that makes check-and-charge atomic across replicas.
* None across crashes either, without a write per charge: the file holds a spend ``ceiling`` per
  advertiser, always ``>= spent``. A ``settle`` whose charges would pass a ceiling first writes the
  state with the ceiling at ``min(budget, spent after the call + reserve_block * budget)`` (one
  atomic ``Storage.write_text``; about ``1 / reserve_block`` writes per advertiser and day), then
  grants; if the write fails, charges above the old ceiling are refused. A load takes ``spent =
  max(saved spent, ceiling)``: a restart may under-spend by one block (plus the charges of a
  ``settle`` cut by the crash), never over-spend.
* History and registrations are written at most every ``snapshot_every_s`` (on the first call
  after it, or by :meth:`Ledger.snapshot`): a crash may lose that much history, never spend. A file
  that cannot be read is an error naming it, never a silent reset of budgets.
* Ray never retries a call (``max_task_retries=0``: a retried ``settle`` could charge twice). A call
  cut by a crash fails in the caller, which then shows none of its ads; its charges may still count.
* Without a storage (``None``) the state lives in memory only and a restart forgets the day's
  spend: for tests, not for serving.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from adray.storage import Storage

log = logging.getLogger(__name__)

STATE_FILE = "ledger.json"
HISTORY = ("rows", "bid_sum", "pvalue_sum", "wins", "cost", "conversions", "lwc_sum", "alpha")
_FORMAT = 1


def day_and_step(t: float, s: PacingSettings) -> tuple[int, int]:
    """The pacing day and decision step of time ``t`` (seconds since the epoch)."""
    day, into = divmod(t, s.day_seconds)
    return int(day), min(s.steps_per_day - 1, int(into / (s.day_seconds / s.steps_per_day)))


class LedgerStateError(ValueError):
    """A persisted pacing state that cannot be used; names the file."""


@dataclass(frozen=True)
class PacingSettings:
    """How a pacing day is cut and how often the ledger writes; every field is checked on creation."""

    steps_per_day: int = 48
    """Decision steps of a day (AuctionNet: 48)."""
    day_seconds: float = 86400.0
    """Length of a pacing day in wall-clock seconds (short in tests and demos)."""
    reserve_block: float = 0.05
    """Fraction of a budget persisted as spend ahead of the spend itself, in (0, 1]: the most a
    restart can under-spend, and the inverse of the writes per advertiser and day."""
    snapshot_every_s: float = 1.0
    """Longest time history waits in memory before it is written (spend never waits)."""

    def __post_init__(self) -> None:
        if not isinstance(self.steps_per_day, int) or isinstance(self.steps_per_day, bool) or self.steps_per_day < 1:
            raise ValueError(f"PacingSettings.steps_per_day must be a positive int, got {self.steps_per_day!r}")
        for name in ("day_seconds", "snapshot_every_s"):
            if not _number(getattr(self, name)) or not getattr(self, name) > 0:
                raise ValueError(f"PacingSettings.{name} must be a positive number of seconds, "
                                 f"got {getattr(self, name)!r}")
        if not _number(self.reserve_block) or not 0 < self.reserve_block <= 1:
            raise ValueError(f"PacingSettings.reserve_block must be a fraction of the budget in (0, 1], "
                             f"got {self.reserve_block!r}")


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _checked(what: str, items: Any, rules: dict[str, tuple[Callable[[Any], bool], str]]) -> list[dict[str, Any]]:
    """``items`` if it is a list of dicts with exactly the keys of ``rules``, each value passing its rule."""
    if not isinstance(items, list | tuple):
        raise ValueError(f"{what} must be a list of dicts, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.keys() != rules.keys():
            found = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise ValueError(f"{what}[{i}] must be a dict with exactly the keys {sorted(rules)}, got {found}")
        for name, (ok, expected) in rules.items():
            if not ok(item[name]):
                raise ValueError(f"{what}[{i}].{name} must be {expected}, got {item[name]!r}")
    return list(items)


_NAME = (lambda v: isinstance(v, str) and v != "", "a non-empty string")
_POSITIVE = (lambda v: _number(v) and v > 0, "a finite number > 0")
_NON_NEGATIVE = (lambda v: _number(v) and v >= 0, "a finite number >= 0")
_SPEC_RULES = {"advertiser": _NAME, "budget": _POSITIVE, "cpa_constraint": _POSITIVE,
               "task": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an int >= 0")}
_EVENT_RULES = {"advertiser": _NAME, "won": (lambda v: isinstance(v, bool), "a bool"), "price": _NON_NEGATIVE,
                **{k: _NON_NEGATIVE for k in ("alpha", "bid", "pvalue", "conversions")},
                "lwc": (_number, "a finite number")}


class Ledger:
    """Budgets, spend and per-step history of every auto-bidding advertiser of the current day.

    Not thread-safe: one caller at a time (the actor of :func:`get_ledger` guarantees it).

    Args:
        storage: where the state is persisted; None keeps it in memory only (a restart forgets it).
        prefix: folder of the state file in ``storage``.
        settings: the pacing day and write policy.
        clock: seconds since the epoch (tests pass a fake one).
    """

    def __init__(self, storage: Storage | None, prefix: str, settings: PacingSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.storage, self.prefix, self.settings, self.clock = storage, prefix, settings, clock
        self.day = int(divmod(clock(), settings.day_seconds)[0])
        self.accounts: dict[str, dict[str, Any]] = {}
        self.writes = self.ceiling_writes = self.refused = 0
        self.last_error: str | None = None
        self._dirty, self._last_write = False, clock()
        self.load()

    # ------------------------------------------------------------------ the two calls of a request
    def views(self, specs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each advertiser's pacing view, registering the ones unseen today with their spec.

        Args:
            specs: ``{"advertiser": str, "budget": float > 0, "cpa_constraint": float > 0, "task": int >= 0}``.

        Returns:
            Per advertiser ``{"day", "step", "steps", "budget", "spent", "remaining", "cpa_constraint",
            "task", "history"}``; ``history`` maps each of :data:`HISTORY` to ``step + 1`` floats, the
            last one what happened so far in the current step. The first registration of the day
            holds all day: a spec with another budget, CPA or task gets the registered values.
        """
        checked = _checked("specs", specs, _SPEC_RULES)
        step = self._step()
        out = {}
        for spec in checked:
            acc = self.accounts.get(spec["advertiser"])
            if acc is None:
                acc = self.accounts[spec["advertiser"]] = {
                    "budget": float(spec["budget"]), "cpa_constraint": float(spec["cpa_constraint"]),
                    "task": spec["task"], "spent": 0.0, "ceiling": 0.0,
                    "history": {k: [0.0] * self.settings.steps_per_day for k in HISTORY}}
                self._dirty = True
            out[spec["advertiser"]] = {
                "day": self.day, "step": step, "steps": self.settings.steps_per_day, "budget": acc["budget"],
                "spent": acc["spent"], "remaining": max(0.0, acc["budget"] - acc["spent"]),
                "cpa_constraint": acc["cpa_constraint"], "task": acc["task"],
                "history": {k: v[: step + 1] for k, v in acc["history"].items()}}
        self._maybe_snapshot()
        return out

    def settle(self, events: list[dict[str, Any]]) -> list[bool]:
        """Record auctions entered in the current step and charge the won ones, atomically.

        Args:
            events: ``{"advertiser", "alpha", "bid", "pvalue", "won": bool, "price" >= 0, "lwc",
                "conversions"}``, one per auction an advertiser registered today entered.

        Returns:
            Per event, False only for a refused charge (``won`` with a price that would take spend
            over the budget, or over a ceiling that could not be persisted); such an event is
            recorded as lost (no win, cost nor conversions). True otherwise, lost auctions included.

        Raises:
            ValueError: an event is malformed or its advertiser is not registered today; then no
                event of the call is recorded.
        """
        checked = _checked("events", events, _EVENT_RULES)
        step = self._step()
        for i, e in enumerate(checked):
            if e["advertiser"] not in self.accounts:
                raise ValueError(f"events[{i}].advertiser {e['advertiser']!r} is not registered today (day "
                                 f"{self.day}): views() registers it; no event of this call was recorded")
        self._raise_ceilings(checked)
        out = []
        for e in checked:
            acc, price = self.accounts[e["advertiser"]], float(e["price"])
            won = e["won"]
            if won and price > 0:
                won = acc["spent"] + price <= min(acc["budget"], acc["ceiling"])
                if won:
                    acc["spent"] += price
                else:
                    self.refused += 1
            h = acc["history"]
            added = {"rows": 1.0, "bid_sum": e["bid"], "pvalue_sum": e["pvalue"], "lwc_sum": e["lwc"]}
            for k, x in (added | {"wins": 1.0, "cost": price, "conversions": e["conversions"]} if won else added).items():
                h[k][step] += x
            h["alpha"][step] = float(e["alpha"])
            out.append(won or not e["won"])
        self._dirty = self._dirty or bool(checked)
        self._maybe_snapshot()
        return out

    def _raise_ceilings(self, events: list[dict[str, Any]]) -> None:
        """Persist, in one write, the ceilings that this call's grantable charges would pass."""
        need: dict[str, float] = {}
        for e in events:
            if e["won"] and e["price"] > 0:
                acc = self.accounts[e["advertiser"]]
                s = need.get(e["advertiser"], acc["spent"]) + float(e["price"])
                if s <= acc["budget"]:  # the same sums, in the same order, as settle's
                    need[e["advertiser"]] = s
        old = {a: self.accounts[a]["ceiling"] for a, s in need.items() if s > self.accounts[a]["ceiling"]}
        if not old:
            return
        for a in old:
            acc = self.accounts[a]
            acc["ceiling"] = min(acc["budget"], need[a] + self.settings.reserve_block * acc["budget"])
        if self.storage is None:
            return
        try:
            self._write()
            self.ceiling_writes += 1
        except Exception as exc:  # any failure to persist: no charge may pass the persisted ceiling
            for a, c in old.items():
                self.accounts[a]["ceiling"] = c
            self.last_error = f"ceiling write failed ({type(exc).__name__}: {exc})"[:500]
            log.warning("pacing: %s; charges above the old ceilings are refused", self.last_error)

    # ------------------------------------------------------------------ clock
    def _step(self) -> int:
        """The current step; moves to a new day (forgetting every advertiser) when the clock says so."""
        day, step = day_and_step(self.clock(), self.settings)
        if day > self.day:
            self.day, self.accounts, self._dirty = day, {}, True
        elif day < self.day:
            return 0  # the state's day is ahead of our clock (see the module docstring)
        return step

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> None:
        """Write the whole state now (nothing without a storage); errors reach the caller."""
        if self.storage is not None:
            self._write()

    def _maybe_snapshot(self) -> None:
        if self.storage is None or not self._dirty or self.clock() - self._last_write < self.settings.snapshot_every_s:
            return
        try:
            self._write()
        except Exception as exc:  # history may wait for the next call; spend never depends on this write
            self.last_error = f"snapshot failed ({type(exc).__name__}: {exc})"[:500]
            log.warning("pacing: %s", self.last_error)

    def _write(self) -> None:
        assert self.storage is not None
        doc = {"format": _FORMAT, "steps_per_day": self.settings.steps_per_day,
               "day_seconds": self.settings.day_seconds, "day": self.day, "written_at": self.clock(),
               "advertisers": self.accounts}
        self.storage.write_text(json.dumps(doc, separators=(",", ":")), self.prefix, STATE_FILE)
        self.writes += 1
        self._dirty, self._last_write = False, self.clock()

    def load(self) -> None:
        """Restore the persisted state (the constructor does); spend is taken as ``max(spent, ceiling)``.

        Raises:
            LedgerStateError: the file cannot be parsed, or was written with another day or steps.
        """
        text = self.storage.read_text(self.prefix, STATE_FILE) if self.storage is not None else None
        if text is None:
            return
        where = self.storage.display(self.prefix, STATE_FILE)  # type: ignore[union-attr]
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
                raise ValueError(f"not a format-{_FORMAT} pacing state")
            saved = (doc["steps_per_day"], doc["day_seconds"])
            if saved != (self.settings.steps_per_day, self.settings.day_seconds):
                raise LedgerStateError(
                    f"pacing state {where} was written with steps_per_day={saved[0]}, day_seconds={saved[1]}; "
                    f"this ledger has steps_per_day={self.settings.steps_per_day}, day_seconds="
                    f"{self.settings.day_seconds}: use another prefix (ledger name), or remove the file once "
                    "its day is over")
            day, accounts = int(doc["day"]), {str(a): _account(a, acc, self.settings.steps_per_day)
                                              for a, acc in dict(doc["advertisers"]).items()}
        except LedgerStateError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LedgerStateError(f"pacing state {where} cannot be read ({type(exc).__name__}: {exc}); the "
                                   "ledger will not start afresh, which would reset budgets already spent: "
                                   "repair or remove the file") from None
        if day >= self.day:  # an older day's state is over: nothing of it carries
            self.day, self.accounts = day, accounts

    def stats(self) -> dict[str, Any]:
        """Counters since this object was made: writes (all), ceiling_writes, refused charges, last_error."""
        return {"day": self.day, "advertisers": len(self.accounts), "writes": self.writes,
                "ceiling_writes": self.ceiling_writes, "refused": self.refused, "last_error": self.last_error}


def _account(name: str, acc: dict[str, Any], steps: int) -> dict[str, Any]:
    """One advertiser of a state file, checked; its spend raised to its ceiling (see the module docstring)."""
    out = {"budget": float(acc["budget"]), "cpa_constraint": float(acc["cpa_constraint"]), "task": int(acc["task"]),
           "spent": float(acc["spent"]), "ceiling": float(acc["ceiling"]),
           "history": {k: [float(x) for x in acc["history"][k]] for k in HISTORY}}
    numbers = [out["budget"], out["spent"], out["ceiling"], *(x for v in out["history"].values() for x in v)]
    if not all(map(math.isfinite, numbers)) or out["budget"] <= 0 or min(out["spent"], out["ceiling"]) < 0:
        raise ValueError(f"advertiser {name!r} has a non-finite or negative amount, or a budget <= 0")
    if any(len(v) != steps for v in out["history"].values()):
        raise ValueError(f"advertiser {name!r}: history does not have {steps} steps")
    out["spent"] = max(out["spent"], out["ceiling"])
    return out


# ---------------------------------------------------------------------------------- the Ray actor
class _PacingActor:
    """A :class:`Ledger` as a Ray actor. Synchronous on purpose: Ray runs one method at a time,
    which is what makes a charge atomic across the replicas calling it."""

    def __init__(self, storage_uri: str | None, prefix: str, settings: PacingSettings) -> None:
        self._identity = (storage_uri, prefix, settings)
        self.ledger = Ledger(Storage(storage_uri) if storage_uri is not None else None, prefix, settings)

    def views(self, specs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return self.ledger.views(specs)

    def settle(self, events: list[dict[str, Any]]) -> list[bool]:
        return self.ledger.settle(events)

    def snapshot(self) -> None:
        self.ledger.snapshot()

    def stats(self) -> dict[str, Any]:
        return self.ledger.stats()

    def identity(self) -> tuple[str | None, str, PacingSettings]:
        return self._identity


# Restarted forever (it reloads its state); calls are never retried: settle is not idempotent.
PacingActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)(_PacingActor)


def get_ledger(name: str, storage_uri: str | None, prefix: str, settings: PacingSettings,
               namespace: str = "adray") -> Any:
    """The detached ledger actor ``name`` (created on first use, shared by every caller of the name).

    Raises:
        ValueError: an actor of that name already runs with another storage, prefix or settings.
    """
    actor = PacingActor.options(name=name, namespace=namespace, lifetime="detached",  # type: ignore[attr-defined]
                                get_if_exists=True).remote(storage_uri, prefix, settings)
    found = ray.get(actor.identity.remote(), timeout=120)
    if found != (storage_uri, prefix, settings):
        raise ValueError(f"pacing ledger {name!r} (namespace {namespace!r}) already runs with storage "
                         f"{found[0]!r}, prefix {found[1]!r}, {found[2]}; asked for {storage_uri!r}, {prefix!r}, "
                         f"{settings}: use another ledger name, or stop the running one")
    return actor
