"""The OPE promotion gate on hand-made decision logs (no Ray): a toy two-action workload whose
models are tables π(a|s), published in a temporary registry; ``adray models promote --gate ope``.

The toy world: reward ~ Bernoulli(0.8) for action 1, Bernoulli(0.1) for action 0; the serving
version v0001 logged π(1|s) = 0.7 with its propensities.
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
from adray.workload import EpochConfig, GateData, Headline, Policy, Workload

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


def toy_gate(model: np.ndarray, cfg: Any, meta: dict[str, Any], rows: pa.Table) -> GateData:
    df = rows.to_pandas()
    joined = df["reward"].notna().to_numpy()
    df = df[joined]
    return GateData(rewards=df["reward"].to_numpy(), target_prob=model[df["state"], df["action"]],
                    logging_prob=df["propensity"].to_numpy(),
                    skipped={"outcome not joined": int((~joined).sum())} if (~joined).any() else {})


WORKLOAD = Workload(name="toy", description="toy", config_cls=ToyConfig, configs_dir=Path("."), trainer=_Trainer(),
                    load_model=_load, evaluate=lambda *a: {}, policy=ToyPolicy, headline=Headline("reward", "x"),
                    gate_data=toy_gate)


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A registry with toy v0001 (serving), v0002 (the same policy), v0003 (always action 0)."""
    import workloads

    monkeypatch.setitem(workloads.WORKLOADS, "toy", __name__)
    monkeypatch.setenv("ADRAY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ADRAY_STORAGE", raising=False)
    monkeypatch.setenv("ADRAY_REGISTRY", str(tmp_path / "reg"))
    reg = Registry(tmp_path / "reg")
    for probs in (SERVING, SERVING, [[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.5, 0.5]]):
        src = tmp_path / "src"
        (tmp_path / "probs.json").write_text(json.dumps(probs))
        write_model_dir(src, {"probs.json": tmp_path / "probs.json"}, ToyConfig(), {})
        reg.publish("toy", src, {"workload": "toy"})
    return {"reg": reg, "log": str(tmp_path / "logs")}


def write_log(uri: str, rows: list[dict[str, Any]], stream: str = STREAM) -> None:
    with DecisionLog(Storage(uri), stream, SCHEMA) as log:
        log.append(rows)


def logged_rows(n: int, seed: int = 0, unjoined: int = 0, manual: int = 0) -> list[dict[str, Any]]:
    """n decisions of v0001 (the last ``unjoined`` without reward) + ``manual`` rows of a fallback."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        s = int(rng.integers(0, 2))
        a = int(rng.random() < SERVING[s][1])
        r = float(rng.random() < (0.8 if a == 1 else 0.1))
        rows.append({"state": s, "action": a, "propensity": SERVING[s][a], "policy_id": "toy@v0001",
                     "reward": None if i >= n - unjoined else r})
    rows += [{"state": 0, "action": 0, "propensity": 1.0, "policy_id": "manual", "reward": 0.0}] * manual
    return rows


def promote(env: dict[str, Any], ref: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["models", "promote", ref, "--gate", "ope", "--log", env["log"],
                                    "--stream", STREAM, *args])


# ---------------------------------------------------------------------------------- tests
def test_identical_candidate_is_promoted(env: dict[str, Any]) -> None:
    env["reg"].set_alias("toy", "serving", "v0001")
    write_log(env["log"], logged_rows(400, unjoined=20, manual=30))
    res = promote(env, "toy@v0002", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    g = out["gate"]
    assert out["decision"] == "promoted" and out["previous"] == "toy@v0001"
    assert g["rows"] == {"in_log": 430, "decided_by_serving": 400, "used": 380, "outcome_not_joined": 20}
    assert g["snips"]["value"] == pytest.approx(g["serving_value"]["value"], abs=1e-12)  # weights all 1
    assert g["dr"] is None and g["warnings"] == []
    assert env["reg"].get("toy@serving").version == "v0002"


def test_clearly_worse_candidate_is_held_back_and_the_estimate_printed(env: dict[str, Any]) -> None:
    env["reg"].set_alias("toy", "serving", "v0001")
    write_log(env["log"], logged_rows(400))
    res = promote(env, "toy@v0003", "--json")
    assert res.exit_code == 1, res.output
    g = json.loads(res.output)["gate"]
    assert not g["passed"] and "clearly worse" in g["reason"]
    assert g["snips"]["ci_high"] < g["serving_value"]["value"]
    assert g["snips"]["value"] == pytest.approx(0.1, abs=0.08) and g["serving_value"]["value"] > 0.45
    assert env["reg"].get("toy@serving").version == "v0001"
    text = promote(env, "toy@v0003")  # the table, either way
    assert text.exit_code == 1
    for needle in ("candidate: SNIPS", "serving: mean reward", f"{g['snips']['value']:.4f}",
                   f"{g['serving_value']['value']:.4f}", "held back: toy@serving stays v0001", "rule:"):
        assert needle in text.output, text.output
    text = promote(env, "toy@v0002")
    assert text.exit_code == 0 and "promoted: toy@serving: v0001 -> v0002" in text.output
    assert "candidate: SNIPS" in text.output


def test_too_few_rows_is_an_error_with_the_counts(env: dict[str, Any]) -> None:
    env["reg"].set_alias("toy", "serving", "v0001")
    write_log(env["log"], logged_rows(150, unjoined=10, manual=5))
    res = promote(env, "toy@v0002")  # default --min-rows 200
    assert res.exit_code == 2
    assert "150 of 155 row(s) were decided by toy@v0001" in res.output and "--min-rows 200" in res.output
    res = promote(env, "toy@v0002", "--min-rows", "145")
    assert res.exit_code == 2
    assert "140 usable row(s)" in res.output and "10 outcome not joined" in res.output, res.output
    assert env["reg"].get("toy@serving").version == "v0001"


def test_workload_without_gate_is_named(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "WORKLOAD", dataclasses.replace(WORKLOAD, gate_data=None))
    env["reg"].set_alias("toy", "serving", "v0001")
    res = promote(env, "toy@v0002")
    assert res.exit_code == 2 and "workload 'toy'" in res.output and "has no gate" in res.output


def test_first_promotion_needs_force_and_bad_input_is_exit_2(env: dict[str, Any]) -> None:
    res = promote(env, "toy@v0002")
    assert res.exit_code == 2 and "toy@serving does not exist yet" in res.output and "--force" in res.output
    res = promote(env, "toy@v0002", "--force")
    assert res.exit_code == 0 and env["reg"].get("toy@serving").version == "v0002"
    res = promote(env, "toy@v0003")  # the log does not exist
    assert res.exit_code == 2 and "does not exist" in res.output
    res = CliRunner().invoke(app, ["models", "promote", "toy@v0003", "--gate", "abtest"])
    assert res.exit_code == 2 and "--gate 'abtest'" in res.output


def test_snips_on_a_hand_computed_table(env: dict[str, Any]) -> None:
    """Candidate v0004: π(·|s0) = (0, 1), π(·|s1) = (0.5, 0.5). Rows (s, a, μ, r) and weights ρ = π/μ:
    (0, 1, .5, 1) ρ 2;  (0, 0, .5, 0) ρ 0;  (1, 1, .25, 1) ρ 2;  (1, 0, .75, 0) ρ 2/3.
    SNIPS = (2 + 2) / (2 + 0 + 2 + 2/3) = 6/7; serving = mean r = 1/2; ESS = (14/3)^2 / (76/9) = 49/19."""
    env["reg"].set_alias("toy", "serving", "v0001")
    rows = [(0, 1, 0.5, 1.0), (0, 0, 0.5, 0.0), (1, 1, 0.25, 1.0), (1, 0, 0.75, 0.0)]
    write_log(env["log"], [{"state": s, "action": a, "propensity": mu, "policy_id": "toy@v0001", "reward": r}
                           for s, a, mu, r in rows])
    res = promote(env, "toy@v0004", "--min-rows", "4", "--json")
    assert res.exit_code == 1, res.output  # ESS 2.6 < 30: too little overlap to value the candidate
    assert "too little overlap" in json.loads(res.output)["message"]
    g = json.loads(res.output)["gate"]
    assert g["snips"]["value"] == pytest.approx(6 / 7, rel=1e-12)
    assert g["snips"]["ess"] == pytest.approx(49 / 19, rel=1e-12)
    assert g["serving_value"]["value"] == 0.5
    assert g["serving_value"]["std_err"] == pytest.approx(np.std([1, 0, 1, 0], ddof=1) / 2)
    assert "effective sample size of 2.6 of 4 rows" in g["warnings"][0]
