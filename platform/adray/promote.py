"""``adray models promote``: move a model's alias (``@serving``) to a version, behind a gate or forced.

An alias moves in one of two ways, and every move is recorded in the registry's alias history
(``adray models history NAME``: time, from, to, the gate's report or "forced"):

* ``--gate ope``: the candidate is valued off-policy on the decision log, against the version the
  alias names now, and the alias moves only if the gate says promote;
* ``--force``: no gate (a first version, a rollback, an override). Nothing else moves an alias.

The OPE gate:

1. read the log (``adray.decision_log.read_log`` of ``stream`` under the storage URI; default
   ``$ADRAY_STORAGE``, else ``$ADRAY_HOME``: where the serving graph writes it) and keep the rows
   whose ``policy_id`` (the model ref that made the logged decision) is the version the alias
   names now;
2. the workload's ``gate_data`` (:class:`adray.workload.GateData`) turns them, given both versions,
   into rewards under the serving version's reward definition (one yardstick; a candidate defined
   otherwise is refused by name), the candidate's probability of each logged action, the logged
   propensities and the candidate's mass off the logging policy's support;
3. :func:`adray.ope_gate.decide` (a pure function of those arrays, re-exported here as
   :func:`decide`) answers promote / hold / cannot value under the rule asked for
   (``non_inferior`` by default, ``superior`` for the strict rule; margin and one-sided error rate
   stated in the report). Its module docstring gives the estimator and why.

Exit codes of the command: 0 promoted (or already so), 1 held back, 3 cannot value (the log cannot
decide: too few rows, or the candidate's decisions lie off the log's support; the message says
what to change), 2 bad input.

The alias is read once at the start and written once at the end; two promotions of one name at
the same instant are not serialised (the later write wins; both are recorded).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import pyarrow.compute as pc

from adray import ope
from adray.decision_log import read_log
from adray.models import LoadedModel, load_model
from adray.ope_gate import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    DEFAULT_MAX_UNSUPPORTED,
    DEFAULT_MIN_ROWS,
    RULES,
    GateDecision,
    Rule,
    decide,
)
from adray.paths import storage_uri
from adray.registry import ModelVersion, Registry, check_alias
from adray.storage import Storage
from adray.workload import GateData, GateMismatch, GateModel, Workload, get_workload

GATES = ("ope",)
DEFAULT_ALIAS = "serving"
DEFAULT_STREAM = "decisions/feed"
"""The serving graph's decision-log stream (``serve_apps.feed_app.FeedArgs.log_stream``)."""
POLICY_ID = "policy_id"
"""The decision-log column naming the model ref that made each logged decision (``name@v0003``)."""
EXIT_CODES = {"promoted": 0, "unchanged": 0, "held back": 1, "cannot value": 3}

__all__ = ["EXIT_CODES", "GATES", "RULES", "GateData", "GateDecision", "GateReport", "PromoteError",
           "PromoteResult", "decide", "ope_gate", "promote"]


class PromoteError(ValueError):
    """A promotion that cannot be decided as asked (bad input): the message says what and why."""


@dataclasses.dataclass(frozen=True)
class GateReport:
    """What the OPE gate read, measured and decided."""

    candidate: str
    serving: str
    log: str
    """Where the rows came from (storage and stream)."""
    rows: dict[str, int]
    """``in_log``, ``decided_by_serving``, ``used`` and each skip reason of the workload."""
    decision: GateDecision
    dr: ope.Estimate | None = None
    """For information (not part of the rule); None without the workload's q̂."""

    @property
    def passed(self) -> bool:
        return self.decision.promoted

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "serving": self.serving, "log": self.log, "rows": self.rows,
                **self.decision.to_dict(), "dr": self.dr.to_dict() if self.dr else None}


Outcome = Literal["promoted", "unchanged", "held back", "cannot value"]


@dataclasses.dataclass(frozen=True)
class PromoteResult:
    candidate: str
    alias: str
    previous: str | None
    """The version the alias named before (None: it did not exist)."""
    outcome: Outcome
    message: str
    gate: GateReport | None = None

    @property
    def promoted(self) -> bool:
        """The alias names the candidate now."""
        return self.outcome in ("promoted", "unchanged")

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "alias": self.alias, "previous": self.previous,
                "promoted": self.promoted, "decision": self.outcome, "message": self.message,
                "gate": self.gate.to_dict() if self.gate else None}


def _gate_model(loaded: LoadedModel) -> GateModel:
    return GateModel(loaded.model, loaded.cfg, loaded.meta, loaded.version.ref)


def ope_gate(wl: Workload, candidate: ModelVersion, serving: ModelVersion, reg: Registry, log_uri: str,
             stream: str, *, rule: Rule = "non_inferior", margin: float = DEFAULT_MARGIN,
             alpha: float = DEFAULT_ALPHA, max_unsupported: float = DEFAULT_MAX_UNSUPPORTED,
             min_rows: int = DEFAULT_MIN_ROWS, seed: int = 0) -> GateReport:
    """Value ``candidate`` against ``serving`` on the rows ``serving`` decided (module docstring)."""
    if wl.gate_data is None:
        raise PromoteError(f"workload {wl.name!r} has no gate (Workload.gate_data is None): its versions cannot be "
                           "valued on the decision log; promote with --force (recorded)")
    storage = Storage(log_uri)
    table = read_log(storage, stream)
    where = storage.display(stream)
    if POLICY_ID not in table.column_names:
        raise PromoteError(f"decision log {where} has no {POLICY_ID!r} column (which model decided each row); "
                           f"columns: {table.column_names[:20]}")
    mine = table.filter(pc.fill_null(pc.equal(table[POLICY_ID], serving.ref), False))
    rows = {"in_log": table.num_rows, "decided_by_serving": mine.num_rows}
    try:
        data = wl.gate_data(_gate_model(load_model(candidate.ref, reg)), _gate_model(load_model(serving.ref, reg)),
                            mine)
    except GateMismatch as exc:
        raise PromoteError(str(exc)) from None
    rows.update({"used": len(data.rewards), **{k.replace(" ", "_"): v for k, v in data.skipped.items()}})
    try:
        decision = decide(data.rewards, data.target_prob, data.logging_prob, data.unsupported,
                          reward_floor=data.reward_floor, rule=rule, margin=margin, alpha=alpha,
                          max_unsupported=max_unsupported, min_rows=min_rows, advice=data.advice, seed=seed)
        dr = None if data.q_logged is None or not len(data.rewards) else ope.dr(
            data.rewards, data.target_prob, data.logging_prob, data.q_logged, data.v_target)
    except ValueError as exc:
        raise PromoteError(f"workload {wl.name!r} gave the gate invalid inputs: {exc}") from None
    if decision.decision == "cannot_value" and mine.num_rows < min_rows:
        decision = dataclasses.replace(decision, reason=(
            f"decision log {where}: {mine.num_rows} of {table.num_rows} row(s) were decided by {serving.ref} "
            f"({len(data.rewards)} usable); the gate needs at least --min-rows {min_rows}"))
    return GateReport(candidate.ref, serving.ref, where, rows, decision, dr)


def promote(ref: str, *, gate: str | None = None, alias: str = DEFAULT_ALIAS, log_uri: str | None = None,
            stream: str = DEFAULT_STREAM, min_rows: int = DEFAULT_MIN_ROWS, force: bool = False,
            registry: str | None = None, rule: Rule = "non_inferior", margin: float = DEFAULT_MARGIN,
            alpha: float = DEFAULT_ALPHA, max_unsupported: float = DEFAULT_MAX_UNSUPPORTED,
            seed: int = 0) -> PromoteResult:
    """Move ``name@alias`` to the version ``ref`` names: through the gate, or with ``force``.

    ``force`` without a gate moves the alias unconditionally (recorded as forced); with a gate it
    only allows the first promotion (no version under the alias to compare with). Without either,
    nothing moves: an alias never moves silently.

    Raises:
        PromoteError: no gate and no --force, unknown gate or rule, a workload without a gate, no
            version under the alias (gated, without ``force``), another reward definition, bad
            gate inputs.
        RegistryError, StorageError, DataError: unknown model or alias, unreadable log or rows.
    """
    if gate is not None and gate not in GATES:
        raise PromoteError(f"--gate {gate!r}: expected one of {list(GATES)}")
    if rule not in RULES:
        raise PromoteError(f"--rule {rule!r}: expected one of {list(RULES)}")
    if min_rows < 2:
        raise PromoteError(f"--min-rows {min_rows}: expected >= 2 (a standard error needs two rows)")
    reg = Registry(registry)
    check_alias(alias)
    mv = reg.get(ref)
    current = reg.aliases(mv.name).get(alias)
    previous = f"{mv.name}@{current}" if current else None
    tag = f"{mv.name}@{alias}"
    if current == mv.version:
        return PromoteResult(mv.ref, alias, previous, "unchanged", f"{tag} already names {mv.ref}; nothing to do")
    if gate is None:
        if not force:
            raise PromoteError(f"moving {tag} ({current or 'unset'} -> {mv.version}) without a gate needs --force "
                               f"(recorded as forced in `adray models history {mv.name}`); or value it first with "
                               "--gate ope")
        reg.set_alias(mv.name, alias, mv.version, how="forced")
        return PromoteResult(mv.ref, alias, previous, "promoted",
                             f"{tag}: {current or 'unset'} -> {mv.version} (forced, no gate; recorded)")
    wl = get_workload(mv.manifest.get("workload", "?"))
    if wl.gate_data is None:
        raise PromoteError(f"workload {wl.name!r} (model {mv.ref}) has no gate: Workload.gate_data is None, so its "
                           "versions cannot be valued on the decision log; promote with --force (recorded)")
    if current is None:
        if not force:
            raise PromoteError(f"{tag} does not exist yet: the gate compares a candidate with the version serving "
                               f"under the alias, and there is none. Add --force to set {tag} without an estimate "
                               "(recorded as forced)")
        reg.set_alias(mv.name, alias, mv.version, how="forced")
        return PromoteResult(mv.ref, alias, None, "promoted", f"{tag}: unset -> {mv.version} (first promotion: "
                             "nothing to compare with, gate skipped by --force; recorded)")
    report = ope_gate(wl, mv, reg.get(f"{mv.name}@{current}"), reg, log_uri or storage_uri(), stream, rule=rule,
                      margin=margin, alpha=alpha, max_unsupported=max_unsupported, min_rows=min_rows, seed=seed)
    d = report.decision
    if d.decision == "promote":
        reg.set_alias(mv.name, alias, mv.version, how="gate", gate=report.to_dict())
        return PromoteResult(mv.ref, alias, previous, "promoted", f"promoted: {tag}: {current} -> {mv.version} "
                             f"({d.reason})", report)
    if d.decision == "cannot_value":
        return PromoteResult(mv.ref, alias, previous, "cannot value", f"cannot value: {tag} stays {current} "
                             f"({d.reason})", report)
    return PromoteResult(mv.ref, alias, previous, "held back", f"held back: {tag} stays {current} ({d.reason})",
                         report)
