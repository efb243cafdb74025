"""``adray models promote``: move a model's alias (``@serving``) to a version, optionally gated.

Without a gate the alias moves (a rollback is a promotion of the older version). With
``--gate ope`` the candidate is first valued on the decision log, off-policy:

1. read the log (``adray.decision_log.read_log`` of ``stream`` under the storage URI; default
   ``$ADRAY_STORAGE``, else ``$ADRAY_HOME``: where the serving graph writes it) and keep the rows
   whose ``policy_id`` (the model ref that made the logged decision) is the version the alias
   names now;
2. the workload's ``gate_data`` (:class:`adray.workload.GateData`) turns them into rewards, the
   candidate's probability of each logged action under its serving rule and the logged
   propensities, leaving out rows without a joined outcome; at least ``min_rows`` must remain;
3. the serving version's value is the mean logged reward (on-policy: its own decisions), with a
   standard error from the sample; the candidate's value is SNIPS (``adray.ope.snips``, bootstrap
   standard error) and, when the workload gives q̂/v̂, DR (``adray.ope.dr``);
4. **the rule**: promote when the candidate's SNIPS upper 95% bound (value + 1.96 s.e.) is at
   least the serving version's point estimate; else hold back. Also held back: too little
   overlap (the candidate's importance weights have an effective sample size below ``LOW_ESS``,
   30, or 0: the estimate would rest on a handful of rows, so the log cannot value it).

Why so lenient: a few hundred logged decisions of an exploring policy cannot prove that a new
policy is better (the importance weights make the estimate's interval wide), but they can catch a
candidate that is clearly worse. Demanding proof of improvement would hold back nearly every
version; the gate is a guard against regressions, not a test of superiority. DR is printed for
information and not part of the rule (it is unavailable for workloads without a value model).

First promotion: with no version under the alias there is nothing to compare with; the gated
command refuses (exit 2) unless ``--force``, which sets the alias without an estimate. ``--force``
does nothing else: to override a gate's "held back", promote without ``--gate``.

The alias is read once at the start and written once at the end; two promotions of one name at
the same instant are not serialised (the later write wins), as with publishing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow.compute as pc

from adray import ope
from adray.decision_log import read_log
from adray.models import load_model
from adray.paths import storage_uri
from adray.registry import ModelVersion, Registry, check_alias
from adray.storage import Storage
from adray.workload import GateData, Workload, get_workload

GATES = ("ope",)
DEFAULT_ALIAS = "serving"
DEFAULT_STREAM = "decisions/feed"
"""The serving graph's decision-log stream (``serve_apps.feed_app.FeedArgs.log_stream``)."""
POLICY_ID = "policy_id"
"""The decision-log column naming the model ref that made each logged decision (``name@v0003``)."""
Z = 1.96
"""Half-width of the 95% normal interval in standard errors."""
LOW_ESS = 30.0
"""Below this Kish effective sample size of the candidate's weights the report warns that the
estimate rests on a handful of rows (the interval is wide, so the gate lets almost anything pass)."""
TOLERANCE = 1e-9
"""Relative slack of the rule's comparison: a candidate identical to the serving version must
pass even when the two sums round differently."""

__all__ = ["GATES", "GateData", "GateReport", "PromoteError", "PromoteResult", "gate_rule", "on_policy_value",
           "ope_gate", "promote"]


class PromoteError(ValueError):
    """A promotion that cannot be decided as asked (bad input): the message says what and why."""


def on_policy_value(rewards: np.ndarray) -> ope.Estimate:
    """The mean reward of the serving version's own decisions, with its standard error."""
    r = np.asarray(rewards, np.float64)
    se = float(r.std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else float("nan")
    return ope.Estimate(float(r.mean()), se, float(len(r)), len(r))


def bounds(e: ope.Estimate) -> tuple[float, float]:
    """The estimate's 95% normal interval."""
    return e.value - Z * e.std_err, e.value + Z * e.std_err


def gate_rule(serving: ope.Estimate, candidate: ope.Estimate) -> tuple[bool, str]:
    """(pass, why): see the module docstring."""
    if candidate.ess <= 0:
        return False, ("no overlap: the candidate gives probability 0 to every logged action (ESS 0), "
                       "so the log says nothing about it")
    if candidate.ess < LOW_ESS:
        return False, (f"too little overlap: the candidate's importance weights have an effective sample size "
                       f"of {candidate.ess:.1f} (< {LOW_ESS:g}); the log cannot value it (log more, or with more "
                       "exploration)")
    upper = bounds(candidate)[1]
    if upper >= serving.value - TOLERANCE * max(1.0, abs(serving.value)):
        return True, f"candidate SNIPS upper 95% bound {upper:.4f} >= serving value {serving.value:.4f}"
    return False, f"candidate SNIPS upper 95% bound {upper:.4f} < serving value {serving.value:.4f}: clearly worse"


def _estimate_dict(e: ope.Estimate | None) -> dict[str, float] | None:
    if e is None:
        return None
    lo, hi = bounds(e)
    return {**e.to_dict(), "ci_low": lo, "ci_high": hi}


@dataclasses.dataclass(frozen=True)
class GateReport:
    """What the OPE gate measured and decided."""

    candidate: str
    serving: str
    log: str
    """Where the rows came from (storage and stream)."""
    rows: dict[str, int]
    """``in_log``, ``decided_by_serving``, ``used`` and each skip reason of the workload."""
    serving_value: ope.Estimate
    snips: ope.Estimate
    dr: ope.Estimate | None
    passed: bool
    reason: str
    warnings: tuple[str, ...] = ()
    """What makes this estimate weak (not part of the rule)."""

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "serving": self.serving, "log": self.log, "rows": self.rows,
                "serving_value": _estimate_dict(self.serving_value), "snips": _estimate_dict(self.snips),
                "dr": _estimate_dict(self.dr), "passed": self.passed, "reason": self.reason,
                "rule": f"promote when snips + {Z} * snips.std_err >= serving_value",
                "warnings": list(self.warnings)}


@dataclasses.dataclass(frozen=True)
class PromoteResult:
    candidate: str
    alias: str
    previous: str | None
    """The version the alias named before (None: it did not exist)."""
    promoted: bool
    """The alias names the candidate now."""
    message: str
    gate: GateReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "alias": self.alias, "previous": self.previous,
                "promoted": self.promoted, "decision": "promoted" if self.promoted else "held back",
                "message": self.message, "gate": self.gate.to_dict() if self.gate else None}


def ope_gate(wl: Workload, candidate: ModelVersion, serving: ModelVersion, reg: Registry, log_uri: str,
             stream: str, min_rows: int, seed: int = 0) -> GateReport:
    """Value ``candidate`` against ``serving`` on the rows ``serving`` decided (module docstring)."""
    if wl.gate_data is None:
        raise PromoteError(f"workload {wl.name!r} has no gate (Workload.gate_data is None): its versions cannot be "
                           "valued on the decision log; promote without --gate")
    storage = Storage(log_uri)
    table = read_log(storage, stream)
    where = storage.display(stream)
    if POLICY_ID not in table.column_names:
        raise PromoteError(f"decision log {where} has no {POLICY_ID!r} column (which model decided each row); "
                           f"columns: {table.column_names[:20]}")
    mine = table.filter(pc.fill_null(pc.equal(table[POLICY_ID], serving.ref), False))
    rows = {"in_log": table.num_rows, "decided_by_serving": mine.num_rows}
    if mine.num_rows < min_rows:
        raise PromoteError(f"decision log {where}: {mine.num_rows} of {table.num_rows} row(s) were decided by "
                           f"{serving.ref}; the gate needs at least --min-rows {min_rows}")
    loaded = load_model(candidate.ref, reg)
    data = wl.gate_data(loaded.model, loaded.cfg, loaded.meta, mine)
    rows.update({"used": len(data.rewards), **{k.replace(" ", "_"): v for k, v in data.skipped.items()}})
    if len(data.rewards) < min_rows:
        skipped = ", ".join(f"{v} {k}" for k, v in data.skipped.items()) or "none"
        raise PromoteError(f"decision log {where}: {len(data.rewards)} usable row(s) decided by {serving.ref} "
                           f"({mine.num_rows} decided, skipped: {skipped}; {table.num_rows} in the log); "
                           f"the gate needs at least --min-rows {min_rows}")
    try:
        value = on_policy_value(data.rewards)
        snips = ope.snips(data.rewards, data.target_prob, data.logging_prob, seed=seed)
        dr = None if data.q_logged is None else ope.dr(data.rewards, data.target_prob, data.logging_prob,
                                                       data.q_logged, data.v_target)
    except ValueError as exc:
        raise PromoteError(f"workload {wl.name!r} gave the gate invalid inputs: {exc}") from None
    passed, reason = gate_rule(value, snips)
    warnings = []
    if 0 < snips.ess < LOW_ESS:
        warnings.append(f"the candidate's importance weights have an effective sample size of {snips.ess:.1f} "
                        f"of {snips.n} rows: it disagrees with most logged decisions, so the estimate rests on a "
                        "few rows and its interval is wide (log more, or with more exploration)")
    return GateReport(candidate.ref, serving.ref, where, rows, value, snips, dr, passed, reason, tuple(warnings))


def promote(ref: str, *, gate: str | None = None, alias: str = DEFAULT_ALIAS, log_uri: str | None = None,
            stream: str = DEFAULT_STREAM, min_rows: int = 200, force: bool = False,
            registry: str | None = None, seed: int = 0) -> PromoteResult:
    """Move ``name@alias`` to the version ``ref`` names, after the gate (if any) lets it.

    Raises:
        PromoteError: unknown gate, a workload without a gate, no version under the alias (gated,
            without ``force``), too few logged rows, bad gate inputs.
        RegistryError, StorageError, DataError: unknown model or alias, unreadable log or rows.
    """
    if gate is not None and gate not in GATES:
        raise PromoteError(f"--gate {gate!r}: expected one of {list(GATES)}")
    if min_rows < 2:
        raise PromoteError(f"--min-rows {min_rows}: expected >= 2 (a standard error needs two rows)")
    reg = Registry(registry)
    check_alias(alias)
    mv = reg.get(ref)
    current = reg.aliases(mv.name).get(alias)
    previous = f"{mv.name}@{current}" if current else None
    tag = f"{mv.name}@{alias}"
    if current == mv.version:
        return PromoteResult(mv.ref, alias, previous, True, f"{tag} already names {mv.ref}; nothing to do")
    if gate is None:
        reg.set_alias(mv.name, alias, mv.version)
        return PromoteResult(mv.ref, alias, previous, True, f"{tag}: {current or 'unset'} -> {mv.version} (no gate)")
    wl = get_workload(mv.manifest.get("workload", "?"))
    if wl.gate_data is None:
        raise PromoteError(f"workload {wl.name!r} (model {mv.ref}) has no gate: Workload.gate_data is None, so its "
                           "versions cannot be valued on the decision log; promote without --gate")
    if current is None:
        if not force:
            raise PromoteError(f"{tag} does not exist yet: the gate compares a candidate with the version serving "
                               f"under the alias, and there is none. Promote a first version without --gate, "
                               f"or add --force to set {tag} without an estimate")
        reg.set_alias(mv.name, alias, mv.version)
        return PromoteResult(mv.ref, alias, None, True, f"{tag}: unset -> {mv.version} (first promotion: "
                             "nothing to compare with, gate skipped by --force)")
    report = ope_gate(wl, mv, reg.get(f"{mv.name}@{current}"), reg, log_uri or storage_uri(), stream, min_rows, seed)
    if report.passed:
        reg.set_alias(mv.name, alias, mv.version)
        return PromoteResult(mv.ref, alias, previous, True, f"promoted: {tag}: {current} -> {mv.version} "
                             f"({report.reason})", report)
    return PromoteResult(mv.ref, alias, previous, False, f"held back: {tag} stays {current} ({report.reason})", report)
