"""DRL-PUT trains, chooses its iteration and publishes with every simulator-truth function made to raise.

Simulators generate data and evaluate; they never train or choose a model (issue 19, section 3).
The smoke logs are generated first (generation may use the simulator), then every function of
the simulator's world -- truth.py, evaluate.true_metrics / evaluate (the truth tables),
sim.make_requests / outcomes / shown_ads (drawing requests and their events), the generators -- is
replaced by one that records the call and raises, in every module that looks it up. Training on
the simulator's logs and on a graph-like decision log (imported with ``adray data import
drlput-log``) must then complete, keep an iteration chosen on ``val``, and publish.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from adray.config import load_config
from adray.train import run_training
from adray.workload import epsilon_greedy
from workloads.drlput import WORKLOAD
from workloads.drlput import columns as C
from workloads.drlput.actions import ActionSpace
from workloads.drlput.config import PARAMS, DRLPUTConfig
from workloads.drlput.outcomes import fill_outcomes
from workloads.drlput.policy import UtilityPolicy

pytestmark = pytest.mark.ray

# the modules themselves (the package's attribute ``evaluate`` is the function of that name)
data, evaluate, sim, truth = (importlib.import_module(f"workloads.drlput.{m}") for m in ("data", "evaluate", "sim", "truth"))

SMALL = {"behaviour.n_requests": 6000, "iterations": 3, "updates_per_iteration": 5, "batch_size": 256,
         "eval_requests": 200}
EPSILON = 0.3  # the graph-like log's exploration


class TruthCalled(AssertionError):
    """A simulator-truth function was called on the training path."""


def _truth_functions() -> dict[int, str]:
    """id -> name of every function that evaluates or simulates the simulator's world."""
    found = {id(f): f"truth.{n}" for n, f in inspect.getmembers(truth, inspect.isfunction)
             if f.__module__ == truth.__name__}
    for mod, names in ((evaluate, ("true_metrics", "evaluate", "_seeds")),
                       (sim, ("make_requests", "outcomes", "shown_ads", "shown_ads_all", "redraw_ads")),
                       (data, ("make_data", "log_requests"))):
        found.update({id(getattr(mod, n)): f"{mod.__name__.rsplit('.', 1)[-1]}.{n}" for n in names})
    return found


def forbid_truth(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every truth function raise wherever it is looked up (module globals); returns the calls."""
    calls: list[str] = []
    targets = _truth_functions()

    def raiser(name: str) -> Any:
        def forbidden(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise TruthCalled(f"{name} called while training: simulator truth must not train or choose a model")
        return forbidden

    patched = 0
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith(("workloads.drlput", "adray", "serve_apps")):
            continue
        for attr, value in list(vars(mod).items()):
            if id(value) in targets and callable(value):
                monkeypatch.setattr(mod, attr, raiser(targets[id(value)]))
                patched += 1
    assert patched >= len(targets), patched
    return calls


def graph_like_log(cfg: DRLPUTConfig, sim_data: Path, out: Path) -> Path:
    """A decision log as the serving graph writes it (utility stage's columns, ``log_values``; string
    request ids; an ε-greedy serving rule's propensities; the top ad's campaign, bid and predictions)
    with the events drawn from the graph's predictions (``fill_outcomes``), not the simulator."""
    rng = np.random.default_rng(5)
    space = ActionSpace(cfg.action)
    states = UtilityPolicy.sample_requests(cfg, sim_data, 10**6, seed=4)  # every state of the val split
    rows = []
    for i, state in enumerate(states):
        rid = f"feed-{i:06d}"
        greedy = (state["hour"] * 7 + state["surface"]) % space.size  # a stand-in for the serving version
        action, prop = epsilon_greedy(greedy, rid, space.size, EPSILON)
        shown = None if rng.random() < 0.2 else {
            "campaign": int(rng.integers(0, 2)), "bid": float(rng.uniform(0.2, 5.0)),
            C.PRED_CLICK: float(rng.uniform(0.01, 0.3)), C.PRED_LONG: float(rng.uniform(0.05, 0.6)),
            C.PRED_CONV: float(rng.uniform(0.01, 0.2))}
        rows.append(UtilityPolicy.log_values(rid, state, {"action": action, "propensity": prop},
                                             {p: float(space.values[action][j]) for j, p in enumerate(PARAMS)},
                                             "drlput@v0001", "ctr=graph-v1", shown))
    table = pa.Table.from_pylist(rows, schema=pa.schema(UtilityPolicy.log_fields()))
    assert table[C.REVENUE].null_count == len(rows) >= 500  # as logged: the events are joined later
    path = out / "joined.parquet"
    fill_outcomes(table, seed=1).to_parquet(path)
    return path


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADRAY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ADRAY_STORAGE", raising=False)
    monkeypatch.delenv("ADRAY_REGISTRY", raising=False)
    return tmp_path


def test_trains_and_publishes_without_simulator_truth(ray_cluster, home: Path,  # noqa: ANN001
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(DRLPUTConfig, "smoke", WORKLOAD.configs_dir, {"data": str(home / "sim"), **SMALL})
    WORKLOAD.make_data(cfg, home / "sim")  # generation legitimately simulates
    log = graph_like_log(cfg, home / "sim", home)
    data.import_decision_log([log], home / "imported", cfg)

    calls = forbid_truth(monkeypatch)
    with pytest.raises(TruthCalled):
        evaluate.true_metrics(cfg, None, 10, 0)  # the patch is live where the trainer looked it up
    with pytest.raises(TruthCalled):
        truth.reward_table(cfg, None, None)
    calls.clear()

    for source, version in ((home / "sim", "v0001"), (home / "imported", "v0002")):
        out = run_training(WORKLOAD, cfg.override({"data": str(source)}), num_workers=1)
        assert out.model_ref == f"drlput@{version}", source
        m = out.metrics
        kept = int(m["best_iteration"]) - 1  # the reported val_* are the kept iteration's, chosen on val logs
        assert kept == m["best_iteration"] - 1 and 0 <= kept < cfg.iterations, m["best_iteration"]
        assert m["val_snips"] == pytest.approx(out.history[kept]["val_snips"], rel=1e-12), (kept, out.history)
        assert {"val_snips", "test_snips", "test_ips", "test_dr", "test_diversity"} <= set(m), sorted(m)
        assert not any(k in m for k in ("val_reward", "val_ctr", "val_revenue")), "truth metrics reported"
        assert len(out.history) == cfg.iterations and all("val_snips" in h for h in out.history)
    assert calls == []
