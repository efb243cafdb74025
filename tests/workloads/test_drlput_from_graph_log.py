"""The loop the serving graph closes, without Serve: drlput v0001 (exploring, serve_epsilon 0.3)
decides feed requests in the composed graph -> decision log -> outcomes drawn from the graph's
predictions -> ``adray data import drlput-log`` -> drlput v0002 trained on it -> ``adray models
promote drlput@v0002 --gate ope`` values it on the log against ``@serving`` = v0001.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from adray.cli import app
from adray.config import load_config
from adray.decision_log import DecisionLog, read_log
from adray.registry import Registry
from adray.serving import PolicyHandle
from adray.storage import Storage
from adray.train import run_training
from serve_apps.feed_graph import FeedGraph, GraphSettings
from serve_apps.feed_log import log_schema
from workloads.drlput import WORKLOAD
from workloads.drlput import columns as C
from workloads.drlput.config import DRLPUTConfig
from workloads.drlput.data import import_decision_log
from workloads.drlput.outcomes import fill_outcomes
from workloads.drlput.policy import UtilityPolicy

LOG_SCHEMA_ = log_schema(UtilityPolicy)

pytestmark = pytest.mark.ray

N_REQUESTS = 1000
EPSILON = 0.3


class LocalUtility:
    """The utility stage as the graph calls it, in-process (no Serve)."""

    def __init__(self, ref: str) -> None:
        self.handle = PolicyHandle(ref)
        self.ref = self.handle.ref

    async def decide(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.handle.decide(requests)


def feed_request(i: int, state: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A feed request with fixed-CPC ads only (no ledger needed); numeric ids (the importer's)."""
    state = {k: v for k, v in state.items() if k != C.REQUEST_ID}
    ads = [{"ad_id": f"a{i}-{k}", "advertiser": f"adv{k}", "campaign": "fixed", "bid": float(rng.uniform(5, 60)),
            "auto": None, "features": {}, "content": [0.2, 0.2], "value": 1.0, "p_long": float(rng.uniform(0.05, 0.6))}
           for k in range(4)]
    return {"request_id": f"feed-{i:06d}",  # the graph's ids are strings
            "user": {"user_id": f"u{i}", "utility_state": state, "journey": None, "profile": [1.0, 0.5],
                     "history": [[0.1, 0.1]]},
            "screen": [0.0, 1.0], "ads": ads,
            "organic": [{"item_id": f"o{i}-{k}", "content": [0.3, 0.3], "value": 1.0} for k in range(5)]}


def test_graph_log_to_retrained_version_to_gate(ray_cluster, tmp_path: Path,  # noqa: ANN001
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("ADRAY_HOME", str(home))
    monkeypatch.delenv("ADRAY_STORAGE", raising=False)
    monkeypatch.delenv("ADRAY_REGISTRY", raising=False)
    cfg = load_config(DRLPUTConfig, "smoke", WORKLOAD.configs_dir, {
        "data": str(tmp_path / "sim"), "serve_epsilon": EPSILON, "iterations": 2, "updates_per_iteration": 10,
        "eval_requests": 400})
    WORKLOAD.make_data(cfg, tmp_path / "sim")
    assert run_training(WORKLOAD, cfg, num_workers=1).model_ref == "drlput@v0001"

    # ---- the graph decides; its rows go to the decision log under $ADRAY_HOME (the graph's default)
    rng = np.random.default_rng(0)
    states = WORKLOAD.policy.sample_requests(cfg, tmp_path / "sim", N_REQUESTS, seed=3)
    graph = FeedGraph({"utility": LocalUtility("drlput@v0001"), "ranking": None, "bidding": None,
                       "allocation": None, "channel": None}, None, GraphSettings())

    async def run_all() -> list[Any]:
        return [await graph.decide(feed_request(i, s, rng)) for i, s in enumerate(states)]

    outcomes = asyncio.run(run_all())
    storage = Storage(home)
    with DecisionLog(storage, "decisions/feed", LOG_SCHEMA_) as log:
        assert log.append([o.row for o in outcomes]) == N_REQUESTS
    table = read_log(storage, "decisions/feed")
    assert table.num_rows == N_REQUESTS and set(table[C.POLICY_ID].to_pylist()) == {"drlput@v0001"}
    props = np.array(table[C.PROPENSITY].to_pylist())
    assert np.isin(np.round(props, 9), np.round([1 - EPSILON + EPSILON / 125, EPSILON / 125], 9)).all()
    assert table[C.REVENUE].null_count == N_REQUESTS  # not joined yet

    # ---- outcomes joined (drawn from the graph's predictions), imported, a second version trained
    joined = fill_outcomes(table, seed=1)
    assert joined[[C.REVENUE, C.CLICK, C.LONG_CLICK, C.CONV]].notna().all().all()
    joined.to_parquet(tmp_path / "joined.parquet")
    import_decision_log([tmp_path / "joined.parquet"], tmp_path / "imported", cfg)
    with DecisionLog(storage, "decisions/feed-joined", LOG_SCHEMA_) as log:
        log.append(pa.Table.from_pandas(joined, schema=LOG_SCHEMA_, preserve_index=False).to_pylist())
    assert run_training(WORKLOAD, cfg.override({"data": str(tmp_path / "imported")}),
                        num_workers=1).model_ref == "drlput@v0002"

    # ---- the gate values v0002 on v0001's logged decisions
    reg = Registry()
    first = CliRunner().invoke(app, ["models", "promote", "drlput@v0001", "--force"])  # first version: forced
    assert first.exit_code == 0, first.output
    res = CliRunner().invoke(app, ["models", "promote", "drlput@v0002", "--gate", "ope",
                                   "--stream", "decisions/feed-joined", "--json"])
    print(res.output)  # the gate's report (pytest -s shows it)
    out = json.loads(res.output.strip().splitlines()[-1])
    g = out["gate"]
    assert g["rows"] == {"in_log": N_REQUESTS, "decided_by_serving": N_REQUESTS, "used": N_REQUESTS}
    assert g["unsupported"] == 0  # v0001 explored (ε = 0.3): every action is in the log's support
    for k in ("value", "std_err", "ess"):
        assert math.isfinite(g["serving"][k]) and math.isfinite(g["candidate"][k]), g
    assert g["dr"] is None  # the served drlput module has no q-hat
    # v0002 changes most greedy decisions over 125 actions; 1000 rows with ε = 0.3 show each changed
    # decision about 0.3 x 1000 / 125 = 2.4 times: the paired bound is far too wide to show that
    # v0002 is not worse, so the decision expected is "held back" (exit 1), and @serving stays v0001
    assert g["agreement"] < 0.5, g
    assert (out["decision"], res.exit_code, g["decision"]) == ("held back", 1, "hold"), out["message"]
    assert g["lower_bound"] < g["threshold"]
    assert reg.get("drlput@serving").version == "v0001" and reg.get("drlput@latest").version == "v0002"
    # the alias history: one forced move; the held-back candidate moved nothing
    hist = CliRunner().invoke(app, ["models", "history", "drlput"])
    print(hist.output)
    assert [(m["from"], m["to"], m["how"]) for m in reg.history("drlput")] == [(None, "v0001", "forced")]
    # forcing v0002 past the gate is possible, and recorded as forced
    forced = CliRunner().invoke(app, ["models", "promote", "drlput@v0002", "--force"])
    assert forced.exit_code == 0 and reg.get("drlput@serving").version == "v0002"
    assert [m["how"] for m in reg.history("drlput")] == ["forced", "forced"]
