"""The OPE promotion gate end to end on hand-made decision logs (no Ray): a toy two-action workload
whose models are tables π(a|s), published in a temporary registry; ``adray models promote``.
(The decision rule itself, on arrays: tests/unit/test_ope_gate.py.)

The toy world: reward ~ Bernoulli(0.8) for action 1, Bernoulli(0.1) for action 0; the serving
version v0001 logged π(1|s) = 0.7 with its propensities (a deterministic serving version, v0005,
logs propensity 1).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from adray.cli import app
from adray.decision_log import DecisionLog
from adray.models import write_model_dir
from adray.registry import Registry
from adray.storage import Storage
from adray.workload import EpochConfig, GateData, GateModel, Headline, Policy, Workload

STREAM = "decisions/toy"
SCHEMA = pa.schema([pa.field("state", pa.int32()), pa.field("action", pa.int32()),
                    pa.field("propensity", pa.float64()), pa.field("policy_id", pa.string()),
                    pa.field("reward", pa.float64())])
SERVING = [[0.3, 0.7], [0.3, 0.7]]  # π(a|s) of v0001, the logging policy


# ---------------------------------------------------------------------------------- the toy workload
@dataclasses.dataclass(frozen=True)
class ToyConfig(EpochConfig):
    """A workload that only exists to be gated."""


class ToyPolicy(Policy):
    route = "toy"

    @classmethod
    def request_schema(cls, meta: dict[str, Any], max_items: int) -> type[Any]:
        return dict

    @classmethod
    def response_schema(cls, meta: dict[str, Any]) -> type[Any]:
        return dict

    def decide(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return []

    @classmethod
    def sample_requests(cls, cfg: Any, data_dir: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
        return []


class _Trainer:
    loop_field, objective, mode = "epochs", "reward", "max"


def _load(path: Path, cfg: Any, meta: dict[str, Any]) -> np.ndarray:
    return np.array(json.loads((path / "probs.json").read_text()))  # (S, A)


def toy_gate(candidate: GateModel, serving: GateModel, rows: pa.Table) -> GateData:
    df = rows.to_pandas()
    joined = df["reward"].notna().to_numpy()
    df = df[joined]
    s, a = df["state"].to_numpy(), df["action"].to_numpy()
    support = serving.model[s] > 0  # (n, A): the actions the serving table could take
    return GateData(rewards=df["reward"].to_numpy(), target_prob=candidate.model[s, a],
                    logging_prob=df["propensity"].to_numpy(),
                    unsupported=(candidate.model[s] * ~support).sum(1), advice="log with exploration",
                    skipped={"outcome not joined": int((~joined).sum())} if (~joined).any() else {})


WORKLOAD = Workload(name="toy", description="toy", config_cls=ToyConfig, configs_dir=Path("."), trainer=_Trainer(),
                    load_model=_load, evaluate=lambda *a: {}, policy=ToyPolicy, headline=Headline("reward", "x"),
                    gate_data=toy_gate)


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A registry with toy v0001 (serving), v0002 (the same policy), v0003 (always action 0), v0004
    (state-dependent), v0005 (always action 1: deterministic), v0006 (action 1 with 0.995)."""
    import workloads

    monkeypatch.setitem(workloads.WORKLOADS, "toy", __name__)
    monkeypatch.setenv("ADRAY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ADRAY_STORAGE", raising=False)
    monkeypatch.setenv("ADRAY_REGISTRY", str(tmp_path / "reg"))
    reg = Registry(tmp_path / "reg")
    for probs in (SERVING, SERVING, [[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.5, 0.5]], [[0.0, 1.0], [0.0, 1.0]],
                  [[0.005, 0.995], [0.005, 0.995]]):
        src = tmp_path / "src"
        (tmp_path / "probs.json").write_text(json.dumps(probs))
        write_model_dir(src, {"probs.json": tmp_path / "probs.json"}, ToyConfig(), {})
        reg.publish("toy", src, {"workload": "toy"})
    return {"reg": reg, "log": str(tmp_path / "logs")}


def write_log(uri: str, rows: list[dict[str, Any]], stream: str = STREAM) -> None:
    with DecisionLog(Storage(uri), stream, SCHEMA) as log:
        log.append(rows)


def logged_rows(n: int, seed: int = 0, unjoined: int = 0, manual: int = 0, table: list[list[float]] = SERVING,
                policy: str = "toy@v0001") -> list[dict[str, Any]]:
    """n decisions of ``policy`` (the last ``unjoined`` without reward) + ``manual`` rows of a fallback."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        s = int(rng.integers(0, 2))
        a = int(rng.random() < table[s][1])
        r = float(rng.random() < (0.8 if a == 1 else 0.1))
        rows.append({"state": s, "action": a, "propensity": table[s][a], "policy_id": policy,
                     "reward": None if i >= n - unjoined else r})
    rows += [{"state": 0, "action": 0, "propensity": 1.0, "policy_id": "manual", "reward": 0.0}] * manual
    return rows


def promote(env: dict[str, Any], ref: str, *args: str, gate: bool = True) -> Any:
    return CliRunner().invoke(app, ["models", "promote", ref, *(["--gate", "ope"] if gate else []), "--log",
                                    env["log"], "--stream", STREAM, *args])


def history(name: str = "toy") -> list[dict[str, Any]]:
    res = CliRunner().invoke(app, ["models", "history", name, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


# ---------------------------------------------------------------------------------- tests
def test_identical_candidate_is_promoted_and_recorded(env: dict[str, Any]) -> None:
    env["reg"].set_alias("toy", "serving", "v0001", how="forced")
    write_log(env["log"], logged_rows(400, unjoined=20, manual=30))
    res = promote(env, "toy@v0002", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    g = out["gate"]
    assert out["decision"] == "promoted" and out["previous"] == "toy@v0001"
    assert g["rows"] == {"in_log": 430, "decided_by_serving": 400, "used": 380, "outcome_not_joined": 20}
    # the same policy: every weight is 1, the paired differences are all 0
    assert g["difference"] == 0 and g["lower_bound"] == 0 and g["unsupported"] == 0
    assert g["candidate"]["value"] == pytest.approx(g["serving"]["value"], abs=1e-12)
    assert g["decision"] == "promote" and g["rule"].startswith("non_inferior")
    assert g["dr"] is None and g["warnings"] == []
    assert env["reg"].get("toy@serving").version == "v0002"
    moves = history()
    assert [(m["from"], m["to"], m["how"]) for m in moves] == [(None, "v0001", "forced"), ("v0001", "v0002", "gate")]
    assert moves[1]["gate"]["decision"] == "promote" and moves[1]["gate"]["candidate"]["n"] == 380
    text = CliRunner().invoke(app, ["models", "history", "toy"])
    assert "@serving: v0001 -> v0002  gate" in text.output and "@serving: unset -> v0001  forced" in text.output


def test_strict_rule_holds_an_identical_candidate(env: dict[str, Any]) -> None:
    env["reg"].set_alias("toy", "serving", "v0001")
    write_log(env["log"], logged_rows(400))
    res = promote(env, "toy@v0002", "--rule", "superior", "--json")
    assert res.exit_code == 1, res.output
    g = json.loads(res.output)["gate"]
    assert g["decision"] == "hold" and g["rule"].startswith("superior") and "= 0 <= 0" in g["reason"]


def test_clearly_worse_candidate_is_held_back_and_the_estimate_printed(env: dict[str, Any]) -> None:
    env["reg"].set_alias("toy", "serving", "v0001")
    write_log(env["log"], logged_rows(400))
    res = promote(env, "toy@v0003", "--json")
    assert res.exit_code == 1, res.output
    out = json.loads(res.output)
    g = out["gate"]
    assert out["decision"] == "held back" and g["decision"] == "hold"
    assert g["lower_bound"] < g["threshold"] < 0 and g["difference"] < -0.2
    assert g["candidate"]["value"] == pytest.approx(0.1, abs=0.08) and g["serving"]["value"] > 0.45
    assert env["reg"].get("toy@serving").version == "v0001"
    assert [m["to"] for m in history()] == ["v0001"]  # a hold moves nothing
    text = promote(env, "toy@v0003")  # the table, either way
    assert text.exit_code == 1
    for needle in ("candidate: IPS from the floor", "serving: mean logged reward", "difference (paired)",
                   f"{g['candidate']['value']:.4f}", f"{g['serving']['value']:.4f}",
                   "held back: toy@serving stays v0001", "rule: non_inferior"):
        assert needle in text.output, text.output
    text = promote(env, "toy@v0002")
    assert text.exit_code == 0 and "promoted: toy@serving: v0001 -> v0002" in text.output


def test_too_few_rows_cannot_be_valued_with_the_counts(env: dict[str, Any]) -> None:
    env["reg"].set_alias("toy", "serving", "v0001")
    write_log(env["log"], logged_rows(150, unjoined=10, manual=5))
    res = promote(env, "toy@v0002")  # default --min-rows 200
    assert res.exit_code == 3, res.output
    assert "150 of 155 row(s) were decided by toy@v0001" in res.output and "--min-rows 200" in res.output
    res = promote(env, "toy@v0002", "--min-rows", "145")
    assert res.exit_code == 3
    assert "140 usable logged row(s)" in res.output and "log more" in res.output, res.output
    assert env["reg"].get("toy@serving").version == "v0001"


def test_deterministic_log_cannot_value_a_candidate_that_decides_differently(env: dict[str, Any]) -> None:
    """v0005 serves action 1 always (propensity 1): the log never shows action 0."""
    env["reg"].set_alias("toy", "serving", "v0005")
    write_log(env["log"], logged_rows(400, table=[[0.0, 1.0], [0.0, 1.0]], policy="toy@v0005"))
    res = promote(env, "toy@v0001", "--json")  # takes action 0 with 0.3: 30% of its mass off the support
    assert res.exit_code == 3, res.output
    out = json.loads(res.output)
    assert out["decision"] == "cannot value" and out["gate"]["unsupported"] == pytest.approx(0.3)
    assert "30.0% of the candidate's probability mass" in out["message"] and "log with exploration" in out["message"]
    # v0006 explores 0.5%: within --max-unsupported, but off-support mass gets no margin, and on a
    # deterministic log every paired difference is <= 0: held back, never promoted
    res = promote(env, "toy@v0006", "--json")
    assert res.exit_code == 1, res.output
    g = json.loads(res.output)["gate"]
    assert g["unsupported"] == pytest.approx(0.005) and g["threshold"] == 0 and "no margin" in g["reason"]
    assert env["reg"].get("toy@serving").version == "v0005"


def test_workload_without_gate_is_named(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "WORKLOAD", dataclasses.replace(WORKLOAD, gate_data=None))
    env["reg"].set_alias("toy", "serving", "v0001")
    res = promote(env, "toy@v0002")
    assert res.exit_code == 2 and "workload 'toy'" in res.output and "has no gate" in res.output


def test_no_silent_move_first_promotion_needs_force_and_bad_input_is_exit_2(env: dict[str, Any]) -> None:
    res = promote(env, "toy@v0002", gate=False)  # no gate, no --force: nothing moves
    assert res.exit_code == 2 and "without a gate needs --force" in res.output
    assert env["reg"].aliases("toy") == {}
    res = promote(env, "toy@v0002")
    assert res.exit_code == 2 and "toy@serving does not exist yet" in res.output and "--force" in res.output
    res = promote(env, "toy@v0002", "--force")
    assert res.exit_code == 0 and env["reg"].get("toy@serving").version == "v0002"
    res = promote(env, "toy@v0003")  # the log does not exist
    assert res.exit_code == 2 and "does not exist" in res.output
    res = promote(env, "toy@v0001", "--force", gate=False)  # a rollback, forced
    assert res.exit_code == 0 and "forced" in res.output
    assert [(m["from"], m["to"], m["how"]) for m in history()] == [(None, "v0002", "forced"),
                                                                    ("v0002", "v0001", "forced")]
    res = CliRunner().invoke(app, ["models", "promote", "toy@v0003", "--gate", "abtest"])
    assert res.exit_code == 2 and "--gate 'abtest'" in res.output
    res = promote(env, "toy@v0003", "--rule", "best")
    assert res.exit_code == 2 and "--rule 'best'" in res.output


def test_estimates_on_a_hand_computed_table(env: dict[str, Any]) -> None:
    """Candidate v0004: π(·|s0) = (0, 1), π(·|s1) = (0.5, 0.5). Rows (s, a, μ, r) and weights w = π/μ:
    (0, 1, .5, 1) w 2;  (0, 0, .5, 0) w 0;  (1, 1, .25, 1) w 2;  (1, 0, .75, 0) w 2/3.
    V_c (floor 0) = (2 + 0 + 2 + 0) / 4 = 1; serving = mean r = 1/2; d = (w - 1) r = (1, 0, 1, 0):
    difference 1/2, s.e. sd(d)/2 = 0.2887; SNIPS = 4 / (14/3) = 6/7; Kish ESS = (14/3)^2 / (76/9) = 49/19."""
    env["reg"].set_alias("toy", "serving", "v0001")
    rows = [(0, 1, 0.5, 1.0), (0, 0, 0.5, 0.0), (1, 1, 0.25, 1.0), (1, 0, 0.75, 0.0)]
    write_log(env["log"], [{"state": s, "action": a, "propensity": mu, "policy_id": "toy@v0001", "reward": r}
                           for s, a, mu, r in rows])
    res = promote(env, "toy@v0004", "--min-rows", "4", "--json")
    g = json.loads(res.output)["gate"]
    assert g["candidate"]["value"] == pytest.approx(1.0) and g["serving"]["value"] == 0.5
    assert g["difference"] == pytest.approx(0.5)
    assert g["difference_se"] == pytest.approx(np.std([1, 0, 1, 0], ddof=1) / 2)
    assert g["lower_bound"] == pytest.approx(0.5 - 1.6448536 * np.std([1, 0, 1, 0], ddof=1) / 2, rel=1e-6)
    assert g["snips"]["value"] == pytest.approx(6 / 7, rel=1e-12)
    assert g["candidate"]["ess"] == pytest.approx(49 / 19, rel=1e-12)
    assert "effective sample size of 2.6 of 4 rows" in g["warnings"][0]
    assert res.exit_code == 0 and g["decision"] == "promote"  # LCB 0.025 >= -0.005
