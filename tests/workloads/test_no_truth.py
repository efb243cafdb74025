"""No simulator truth in training or model selection (issue 19, section 3).

Per log-trained workload: make its smoke data first (generation may use the simulator: that is the
data), then make every function that computes true outcomes or rolls a policy out in the simulator
raise, and train through the platform's one entry (``adray.train.run_training``). Training, the
per-step validation, the best-step choice, β's calibration (crossdqn) and the final test metrics
must all complete and publish without them.

"Where they are looked up": a module-level function is replaced in every loaded ``workloads.*`` /
``adray.*`` module that bound it (``from x import f``); a method on its class. Ray Train runs the
loop in worker processes that the driver's monkeypatching does not reach, so the Ray Train
workloads get their ``TorchSpec`` callables wrapped in :class:`Forbidding`, which installs the same
raisers in whatever process calls them first. Every call is also written to a file, so a truth call
that some ``except`` swallowed still fails the test.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adray.config import load_config
from adray.workload import get_workload

pytestmark = pytest.mark.ray

TRUTH: dict[str, tuple[str, ...]] = {
    "crossdqn": (  # the feed simulator, its rollouts and PAE matching, the log importer's outcome model
        "workloads.crossdqn.sim:FeedSim.step", "workloads.crossdqn.sim:FeedSim.arrange",
        "workloads.crossdqn.sim:make_requests", "workloads.crossdqn.sim:FeedEnv.reset",
        "workloads.crossdqn.sim:FeedEnv.step", "workloads.crossdqn.rollout:rollout",
        "workloads.crossdqn.rollout:match_pae", "workloads.crossdqn.outcomes:rebuild",
        "workloads.crossdqn.outcomes:fill_outcomes", "workloads.crossdqn.data:simulate_logs",
        "workloads.crossdqn.evaluate:evaluate_policy", "workloads.crossdqn.evaluate:value_accuracy",
    ),
    "mtorl": (  # the journey simulator and Algorithm 1 against it
        "workloads.mtorl.sim:JourneySim.__init__", "workloads.mtorl.sim:JourneySim.step",
        "workloads.mtorl.sim:JourneySim.click_prob", "workloads.mtorl.sim:simulate_logs",
        "workloads.mtorl.online:run_procedure", "workloads.mtorl.evaluate:online_reward",
    ),
    "vamo": (  # the auction simulator: a day, its auctions, its market; bidding evaluation days
        "workloads.vamo.sim:simulate_day", "workloads.vamo.sim:run_auctions", "workloads.vamo.world:make_day",
        "workloads.vamo.world:draw_pvalues", "workloads.vamo.evaluate:eval_day", "workloads.vamo.evaluate:run_bidder",
    ),
    "pwiser": ("workloads.pwiser.data:generate",),  # the generator holds the true click/conversion probabilities
}
"""Per workload: ``module:function`` or ``module:Class.method`` of every simulator truth or rollout."""


def _raiser(target: str, calls: Path) -> Callable[..., Any]:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        with open(calls, "a") as f:
            f.write(target + "\n")
        raise AssertionError(f"simulator truth called during training or selection: {target}")

    return forbidden


def forbid_truth(targets: tuple[str, ...], calls: Path, patch: Callable[[Any, str, Any], None]) -> None:
    """Replace every target by a raiser that also appends its name to ``calls``."""
    for target in targets:
        mod_name, attr = target.split(":")
        mod = importlib.import_module(mod_name)
        if "." in attr:  # a method: every lookup goes through its class
            cls, meth = attr.split(".")
            patch(getattr(mod, cls), meth, _raiser(target, calls))
            continue
        original = getattr(mod, attr)
        for m in list(sys.modules.values()):
            name = getattr(m, "__name__", "") or ""
            if name.startswith(("workloads.", "adray.")) and getattr(m, attr, None) is original:
                patch(m, attr, _raiser(target, calls))


@dataclasses.dataclass(frozen=True)
class Forbidding:
    """A TorchSpec callable that first makes the truth functions raise in the calling process
    (a Ray Train worker: the driver's monkeypatching does not reach it). Picklable by reference."""

    fn: Callable[..., Any]
    targets: tuple[str, ...]
    calls: str
    driver_pid: int = dataclasses.field(default_factory=os.getpid)
    """The test's process: already patched (and restored) by monkeypatch, left alone here."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if os.getpid() != self.driver_pid and not getattr(sys, "_adray_truth_forbidden", False):
            forbid_truth(self.targets, Path(self.calls), setattr)
            sys._adray_truth_forbidden = True  # type: ignore[attr-defined]
        return self.fn(*args, **kwargs)


def forbidding_spec(spec: Any, targets: tuple[str, ...], calls: Path) -> Any:
    wrap = {f: Forbidding(getattr(spec, f), targets, str(calls))
            for f in ("load_split", "model_meta", "build_model", "loss", "evaluate", "eval_outputs", "eval_metrics",
                      "step", "step_state")
            if getattr(spec, f) is not None}
    return dataclasses.replace(spec, **wrap)


SHORT = {"crossdqn": {"iterations": 2}, "mtorl": {"epochs": 2, "online_eval": True}, "vamo": {"epochs": 2},
         "pwiser": {"epochs": 2}}
"""Smoke configs, fewer loop steps (this checks what is called, not how well it learns); mtorl with
``online_eval`` on: the switch that used to put Algorithm 1 in every validation."""


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, Path]]:
    """``get(case) -> (cfg, data dir)``, made once per module, before any truth function is forbidden."""
    root = tmp_path_factory.mktemp("no_truth")
    made: dict[str, tuple[Any, Path]] = {}

    def get(case: str) -> tuple[Any, Path]:
        if case not in made:
            name = case.split("-")[0]
            wl = get_workload(name)
            data = root / case
            cfg = load_config(wl.config_cls, "smoke", wl.configs_dir, {"data": str(data), **SHORT[name]})
            if case == "crossdqn-graph-log":
                sim_cfg, sim_data = get("crossdqn")
                _graph_like_log(sim_cfg, sim_data, root / "feed_log.parquet", data)
            else:
                wl.make_data(cfg, data)
            made[case] = (cfg, data)
        return made[case]

    return get


def _graph_like_log(cfg: Any, sim_data: Path, log_file: Path, out: Path) -> None:
    """A decision log as the feed graph writes it (the columns ``crossdqn-log`` reads), from the
    first screens of the simulated logs, imported with ``adray data import crossdqn-log``'s
    function: one terminal transition per screen, outcomes from the importer's outcome model."""
    from adray.data import read_dataset
    from workloads.crossdqn.data import import_decision_log

    df = read_dataset(sim_data).read("train")
    first = df[df["t"] == 0]
    pq.write_table(pa.table({
        "alloc_obs": pa.array([np.asarray(o, np.float32).tolist() for o in first["obs"]], pa.list_(pa.float32())),
        "alloc_action": pa.array(first["actions"].to_numpy(np.int64)),
        "alloc_propensity": pa.array(first["action_prob"].to_numpy(np.float64)),
        "alloc_fallback": pa.array(np.zeros(len(first), bool)),
    }), log_file)
    import_decision_log([log_file], out, cfg, simulate_outcomes=True)


CASES = ["crossdqn", "crossdqn-graph-log", "mtorl", "vamo", "pwiser"]


@pytest.mark.parametrize("case", CASES)
def test_trains_and_publishes_with_simulator_truth_forbidden(case: str, smoke_data, ray_cluster,  # noqa: ANN001
                                                             adray_home: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from adray.train import run_training

    name = case.split("-")[0]
    wl = get_workload(name)
    cfg, data = smoke_data(case)
    calls = tmp_path / "truth_calls.txt"
    forbid_truth(TRUTH[name], calls, monkeypatch.setattr)
    spec = getattr(wl.trainer, "spec", None)
    if spec is not None:  # Ray Train: the loop runs in worker processes
        monkeypatch.setattr(wl.trainer, "spec", forbidding_spec(spec, TRUTH[name], calls))
    if name == "vamo":  # VamoTrainer builds its specs per run (one per task for STL)
        from workloads.vamo import workload as vamo_workload

        make_spec = vamo_workload.make_spec
        monkeypatch.setattr(vamo_workload, "make_spec",
                            lambda tasks=None: forbidding_spec(make_spec(tasks), TRUTH[name], calls))
    mod_name, attr = TRUTH[name][-1].split(":")
    with pytest.raises(AssertionError, match="simulator truth called"):  # the patch is live
        getattr(importlib.import_module(mod_name), attr)()
    calls.unlink()

    out = run_training(wl, cfg, num_workers=1)

    assert not calls.exists(), f"truth functions were called (and the error swallowed): {calls.read_text()}"
    assert out.model_ref == f"{name}@v0001"
    objective = f"val_{wl.trainer.objective}"
    assert np.isfinite(out.metrics[objective]), (objective, out.metrics)
    assert not [k for k in out.metrics if "online" in k]  # mtorl: Algorithm 1 is evaluation only
    if name == "crossdqn":  # β calibrated on held-out logged screens: the served PAE there is the target
        assert out.metrics["val_pae_logged"] == pytest.approx(cfg.pae_target, abs=0.05)

