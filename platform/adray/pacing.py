"""Pacing state of auto-bidding advertisers: budgets, spend and the day's per-step aggregates.

The serving graph reads each auto-bidding advertiser's view (budget, spend, the per-step history
that the bidding model turns into AuctionNet states) before an auction and settles the charges
after it. One Ray actor (:func:`get_ledger`) owns the :class:`Ledger` of every advertiser, so all
Serve replicas draw on one budget each; its state is one JSON file, ``<prefix>/ledger.json`` in a
:class:`~adray.storage.Storage`, from which a restarted actor goes on.

Day ``floor(t / day_seconds)``, step ``floor((t mod day_seconds) / (day_seconds / steps_per_day))``
of the clock. A new day forgets every advertiser; its next view registers it afresh. The day never
goes backwards: a state written under a clock running ahead is kept until ours catches up.

Words: a *grant* is a charge the ledger accepted in a ``settle``; a *bill* is a grant that stands
(not voided): the price of an ad an answer showed. ``spent`` is the sum of the day's bills, or
more after a restart (see below), never less.

Guarantees and how they are kept:

* No overspend: a charge is granted only if ``spent + price <= budget``. The actor is synchronous
  (Ray runs one of its methods at a time): that makes check-and-charge atomic across replicas.
* Billed exactly once, only if shown: every ``settle`` of the graph carries a key, unique per call
  (replica id + sequence number + request id). A second ``settle`` with a key already seen charges
  nothing and returns the first answer. A caller that does not get the answer (timeout, error,
  cancellation) shows none of the call's ads and sends :meth:`Ledger.void` with the key, retrying
  until it lands (a void is idempotent): if the settle ran, its grants are refunded (spend and the
  step's wins, cost and conversions); if it has not run yet, the key is marked void (a tombstone)
  and the settle, when it comes, grants nothing. Ray runs the calls of one submitter to a
  synchronous actor in submission order (docs: "Actor Task Execution Order"; retries excepted,
  hence ``max_task_retries=0``, and ``allow_out_of_order_execution=False`` is set explicitly), so a
  replica's void always finds its own settle done; the tombstone covers any other order. Keys are
  kept in memory for the last ``keys_kept`` settles/voids (:data:`KEYS_KEPT`); a key evicted
  before its void arrives (its grants stay, as spend of an unshown ad) or a tombstone evicted
  before its settle arrives are the one way left to bill an unshown ad: it takes that many calls
  of all replicas between a settle and its void, sent when the settle's timeout fires.
* None across crashes either, without a write per charge: the file holds a spend ``ceiling`` per
  advertiser, always ``>= spent``. A ``settle`` whose charges would pass a ceiling first writes the
  state with the ceiling at ``min(budget, spent after the call + reserve_block * budget)`` (one
  durable ``Storage.write_text``: temp file fsynced, renamed, directory fsynced; about
  ``1 / reserve_block`` writes per advertiser and day), then grants; if the write fails, charges
  above the old ceiling are refused. A load takes ``spent = max(saved spent, ceiling)``. Every
  write is atomic and its file fsynced, so a host crash never leaves a torn or empty file.
* What a crash (kill -9 of the actor, or of its host) costs: the restarted ledger counts as spent
  ``max(saved spent, ceiling)``, which is >= the day's bills; the excess is at most one reserve
  block per advertiser plus the grants that were refunded, or cut by the crash, since the last
  write (a refund is not written ahead). That excess is a *reservation*, not billing: it is
  attached to no ad, no answer shows it, no bill contains it; it can only make the advertiser buy
  less that day, never more than the budget. The keys are lost with the process: a void reaching
  the new incarnation for a key of the old one leaves a tombstone and refunds nothing (that grant
  is inside the reservation); a call of the old one that the new one runs after all is a late
  settle like any other (its void refunds it or has voided it first).
* History and registrations are written at most every ``snapshot_every_s`` (on the first call
  after it, or by :meth:`Ledger.snapshot`): a crash may lose that much history, never spend. A file
  that cannot be read is an error naming it, never a silent reset of budgets.
* Without a storage (``None``) the state lives in memory only and a restart forgets the day's
  spend: for tests, not for serving.

``audit=True`` keeps every key's grants (never evicted) for :meth:`Ledger.journal`: tests and
``benchmarks/graph_budget.py`` compare them with the answers; off in serving.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from adray.storage import Storage

log = logging.getLogger(__name__)

STATE_FILE = "ledger.json"
HISTORY = ("rows", "bid_sum", "pvalue_sum", "wins", "cost", "conversions", "lwc_sum", "alpha")
_FORMAT = 1
KEYS_KEPT = 50_000
"""Settle keys (and their grants) a ledger remembers for voids and repeats, oldest evicted first:
~0.6 KB each (~30 MB), ~50 s of traffic at 1000 settles/s, while a void follows its settle within
the graph's stage timeout (plus its retries, which only happen when the ledger is not answering)."""


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


@dataclass(slots=True)
class _Settled:
    """What one settle key did: the day, the answer, the grants ``(advertiser, price, conversions,
    step)``; ``void`` once voided (a tombstone when the settle had not run: ``answer`` None)."""

    day: int
    answer: tuple[bool, ...] | None
    grants: tuple[tuple[str, float, float, int], ...] = ()
    void: bool = False


class Ledger:
    """Budgets, spend and per-step history of every auto-bidding advertiser of the current day.

    Not thread-safe: one caller at a time (the actor of :func:`get_ledger` guarantees it).

    Args:
        storage: where the state is persisted; None keeps it in memory only (a restart forgets it).
        prefix: folder of the state file in ``storage``.
        settings: the pacing day and write policy.
        clock: seconds since the epoch (tests pass a fake one).
        audit: keep every settle key's grants for :meth:`journal` (tests, benchmarks; memory grows).
        keys_kept: settle keys remembered for voids and repeats when not auditing.
    """

    def __init__(self, storage: Storage | None, prefix: str, settings: PacingSettings,
                 clock: Callable[[], float] = time.time, audit: bool = False, keys_kept: int = KEYS_KEPT) -> None:
        if keys_kept < 1:
            raise ValueError(f"Ledger keys_kept must be >= 1, got {keys_kept!r}")
        self.storage, self.prefix, self.settings, self.clock = storage, prefix, settings, clock
        self.audit, self.keys_kept = audit, keys_kept
        self.day = int(divmod(clock(), settings.day_seconds)[0])
        self.accounts: dict[str, dict[str, Any]] = {}
        self._keys: OrderedDict[str, _Settled] = OrderedDict()
        self.writes = self.ceiling_writes = self.refused = 0
        self.voids = self.tombstones = self.late_settles = self.repeats = 0
        self.refunded = 0.0
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

    def settle(self, events: list[dict[str, Any]], key: str | None = None) -> list[bool]:
        """Record auctions entered in the current step and charge the won ones, atomically.

        Args:
            events: ``{"advertiser", "alpha", "bid", "pvalue", "won": bool, "price" >= 0, "lwc",
                "conversions"}``, one per auction an advertiser registered today entered.
            key: this call's idempotency key (unique per call; see the module docstring). A key
                seen before charges nothing: a repeat gets the first answer, a voided key refuses
                every won event and records nothing.

        Returns:
            Per event, False only for a refused charge (``won`` with a price that would take spend
            over the budget, or over a ceiling that could not be persisted); such an event is
            recorded as lost (no win, cost nor conversions). True otherwise, lost auctions included.

        Raises:
            ValueError: an event is malformed or its advertiser is not registered today; then no
                event of the call is recorded.
        """
        checked = _checked("events", events, _EVENT_RULES)
        if key is not None and not isinstance(key, str):
            raise ValueError(f"settle key must be a string or None, got {type(key).__name__}")
        seen = self._keys.get(key) if key is not None else None
        if seen is not None:
            if seen.void:
                self.late_settles += 1
                return [not e["won"] for e in checked]
            self.repeats += 1
            return list(seen.answer or [])
        step = self._step()
        for i, e in enumerate(checked):
            if e["advertiser"] not in self.accounts:
                raise ValueError(f"events[{i}].advertiser {e['advertiser']!r} is not registered today (day "
                                 f"{self.day}): views() registers it; no event of this call was recorded")
        self._raise_ceilings(checked)
        out, grants = [], []
        for e in checked:
            acc, price = self.accounts[e["advertiser"]], float(e["price"])
            won = e["won"]
            if won and price > 0:
                won = acc["spent"] + price <= min(acc["budget"], acc["ceiling"])
                if won:
                    acc["spent"] += price
                else:
                    self.refused += 1
            if won:  # free wins too: a void must take back the win they recorded
                grants.append((e["advertiser"], price, float(e["conversions"]), step))
            h = acc["history"]
            added = {"rows": 1.0, "bid_sum": e["bid"], "pvalue_sum": e["pvalue"], "lwc_sum": e["lwc"]}
            for k, x in (added | {"wins": 1.0, "cost": price, "conversions": e["conversions"]} if won else added).items():
                h[k][step] += x
            h["alpha"][step] = float(e["alpha"])
            out.append(won or not e["won"])
        self._dirty = self._dirty or bool(checked)
        if key is not None:
            self._remember(key, _Settled(self.day, tuple(out), tuple(grants)))
        self._maybe_snapshot()
        return out

    def void(self, key: str) -> dict[str, Any]:
        """Undo the settle of ``key`` (idempotent): refund its grants if it ran, else mark the key
        so that the settle, if it ever comes, grants nothing.

        Returns:
            ``{"key", "state", "refunded"}``; state ``refunded`` (the settle had run: its grants of
            today are refunded; a previous day's are over and stay), ``tombstone`` (it had not),
            ``void`` (voided before: nothing more happens).
        """
        if not isinstance(key, str):
            raise ValueError(f"void key must be a string, got {type(key).__name__}")
        self._step()
        seen = self._keys.get(key)
        if seen is None:
            self._remember(key, _Settled(self.day, None, void=True))
            self.tombstones += 1
            return {"key": key, "state": "tombstone", "refunded": 0.0}
        if seen.void:
            return {"key": key, "state": "void", "refunded": 0.0}
        seen.void, refunded = True, 0.0
        if seen.day == self.day:
            for adv, price, conversions, step in seen.grants:
                acc = self.accounts.get(adv)
                if acc is None:
                    continue
                acc["spent"] = max(0.0, acc["spent"] - price)
                h = acc["history"]
                h["wins"][step] -= 1.0
                h["cost"][step] -= price
                h["conversions"][step] -= conversions
                refunded += price
            self._dirty = self._dirty or bool(seen.grants)
        self.voids += 1
        self.refunded += refunded
        self._maybe_snapshot()
        return {"key": key, "state": "refunded", "refunded": refunded}

    def journal(self) -> dict[str, dict[str, Any]]:
        """Per settle key: ``grants`` (``[advertiser, price]`` of each granted charge), ``void``,
        ``ran`` (False for a tombstone) and ``day``. Only with ``audit=True`` (else keys are evicted)."""
        if not self.audit:
            raise ValueError("Ledger.journal() needs a ledger made with audit=True (tests and benchmarks only)")
        return {k: {"grants": [[a, p] for a, p, _, _ in s.grants], "void": s.void, "ran": s.answer is not None,
                    "day": s.day} for k, s in self._keys.items()}

    def _remember(self, key: str, settled: _Settled) -> None:
        self._keys[key] = settled
        if not self.audit:
            while len(self._keys) > self.keys_kept:
                self._keys.popitem(last=False)

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
            self._write(durable=True)
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
            self._write(durable=True)

    def _maybe_snapshot(self) -> None:
        if self.storage is None or not self._dirty or self.clock() - self._last_write < self.settings.snapshot_every_s:
            return
        try:
            self._write(durable=False)  # see _write
        except Exception as exc:  # history may wait for the next call; spend never depends on this write
            self.last_error = f"snapshot failed ({type(exc).__name__}: {exc})"[:500]
            log.warning("pacing: %s", self.last_error)

    def _write(self, durable: bool) -> None:
        """The whole state, atomically. ``durable`` (ceiling raises, explicit snapshots) also syncs the
        directory: the new file survives a host crash once this returns. A periodic snapshot skips
        that (~1-4 ms here): it carries no ceiling that was not written durably before, so a host
        crash that loses its rename brings back a file with the same ceilings (and older history)."""
        assert self.storage is not None
        doc = {"format": _FORMAT, "steps_per_day": self.settings.steps_per_day,
               "day_seconds": self.settings.day_seconds, "day": self.day, "written_at": self.clock(),
               "advertisers": self.accounts}
        self.storage.write_text(json.dumps(doc, separators=(",", ":")), self.prefix, STATE_FILE, durable=durable)
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

    def budgets(self) -> dict[str, dict[str, float]]:
        """Today's ``{"budget", "spent", "remaining"}`` of each registered advertiser; read-only (the
        feed graph's metrics poll it); empty once the clock has passed the state's day."""
        if day_and_step(self.clock(), self.settings)[0] > self.day:
            return {}
        return {adv: {"budget": acc["budget"], "spent": acc["spent"], "remaining": max(0.0, acc["budget"] - acc["spent"])}
                for adv, acc in self.accounts.items()}

    def stats(self) -> dict[str, Any]:
        """Counters since this object was made: writes (all), ceiling_writes, refused charges, voids
        (settles refunded), refunded (their sum), tombstones (voids before their settle),
        late_settles (settles that came after their void), repeats (keys settled twice), last_error."""
        return {"day": self.day, "advertisers": len(self.accounts), "writes": self.writes,
                "ceiling_writes": self.ceiling_writes, "refused": self.refused, "voids": self.voids,
                "refunded": self.refunded, "tombstones": self.tombstones, "late_settles": self.late_settles,
                "repeats": self.repeats, "keys": len(self._keys), "last_error": self.last_error}


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


class LocalLedgerClient:
    """A :class:`Ledger` of this process behind the async calls the feed graph makes (no Ray)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def views(self, specs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return self.ledger.views(specs)

    async def settle(self, events: list[dict[str, Any]], key: str | None = None) -> list[bool]:
        return self.ledger.settle(events, key)

    async def void(self, key: str) -> dict[str, Any]:
        return self.ledger.void(key)


# ---------------------------------------------------------------------------------- the Ray actor
class _PacingActor:
    """A :class:`Ledger` as a Ray actor. Synchronous on purpose: Ray runs one method at a time,
    which is what makes a charge atomic across the replicas calling it, and runs one caller's
    calls in the order they were sent (a void after its settle). ``audit`` is not part of the
    identity: a benchmark may start the actor with it before the graph asks for the same ledger."""

    def __init__(self, storage_uri: str | None, prefix: str, settings: PacingSettings, audit: bool = False) -> None:
        self._identity = (storage_uri, prefix, settings)
        self.ledger = Ledger(Storage(storage_uri) if storage_uri is not None else None, prefix, settings,
                             audit=audit)

    def views(self, specs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return self.ledger.views(specs)

    def settle(self, events: list[dict[str, Any]], key: str | None = None) -> list[bool]:
        return self.ledger.settle(events, key)

    def settle_many(self, calls: list[tuple[list[dict[str, Any]], str | None]]) -> list[list[bool] | str]:
        """Several settles in one actor call (a feed replica's concurrent requests): each run as
        :meth:`settle` runs it, in order, atomically one by one. One that raises answers its error's
        text and the others stand (each has its own key)."""
        out: list[list[bool] | str] = []
        for events, key in calls:
            try:
                out.append(self.ledger.settle(events, key))
            except Exception as exc:  # noqa: BLE001 - that caller's error, not the batch's
                out.append(f"{type(exc).__name__}: {exc}")
        return out

    def void(self, key: str) -> dict[str, Any]:
        return self.ledger.void(key)

    def journal(self) -> dict[str, dict[str, Any]]:
        return self.ledger.journal()

    def pid(self) -> int:
        return os.getpid()

    def snapshot(self) -> None:
        self.ledger.snapshot()

    def stats(self) -> dict[str, Any]:
        return self.ledger.stats()

    def budgets(self) -> dict[str, dict[str, float]]:
        return self.ledger.budgets()

    def identity(self) -> tuple[str | None, str, PacingSettings]:
        return self._identity


# Restarted forever (it reloads its state). Calls are never retried (a retry may run out of order,
# after the void meant to follow it) and run in each caller's submission order.
ACTOR_OPTIONS: dict[str, Any] = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": 0,
                                 "allow_out_of_order_execution": False}
PacingActor = ray.remote(**ACTOR_OPTIONS)(_PacingActor)


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
