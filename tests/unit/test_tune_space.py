"""Tune spaces are data: every shipped space loads against its workload's config, and a bad
space is refused by name before any trial starts."""

import re
from pathlib import Path

import pytest

from adray.tune import TuneSpaceError, load_space

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "tune_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_loads(path):
    space = load_space(path)
    assert space.params and space.metric.startswith("val_")


def test_mtorl_space_is_judged_offline_never_by_the_simulator():
    """Issue 19: Algorithm 1 against the simulator is an evaluation (test_online_reward), never a
    sweep's objective; the knobs only it can value (τ, η, α) are not swept."""
    space = load_space(REPO / "tune_spaces" / "mtorl.yaml", "mtorl")
    assert set(space.params) == {"n", "lam", "mu"}
    assert space.metric == "val_reward_auc" and space.config == "online" and space.grace_period == 10
    for path in (REPO / "tune_spaces").glob("mtorl*.yaml"):
        assert "online" not in load_space(path, "mtorl").metric


@pytest.mark.parametrize(("extra", "message"), [
    ("grace_period: 0\n", "grace_period=0: expected an integer >= 1"),
    ("grace_period: two\n", "grace_period='two'"),
    ("schedule: asha\n", "unknown key(s) ['schedule']"),
    ("mode: best\n", "mode='best'"),
])
def test_bad_space_is_refused_by_name(tmp_path, extra, message):
    path = tmp_path / "space.yaml"
    path.write_text("workload: mtorl\nmetric: val_f1_macro\nparams:\n  mu: {type: float, low: 0, high: 0.2}\n" + extra)
    with pytest.raises(TuneSpaceError, match=re.escape(message)):
        load_space(path)


def test_unknown_parameter_is_refused(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("workload: mtorl\nmetric: val_f1_macro\nparams:\n  muu: {type: float, low: 0, high: 0.2}\n")
    with pytest.raises(TuneSpaceError, match="muu"):
        load_space(path)


@pytest.mark.parametrize(("param", "message"), [
    ("{type: float, low: 0.01, high: 1.0, lgo: true}", "params.mu: unknown key(s) ['lgo'] for type float"),
    ("{type: categorical, choices: [1, 2], step: 1}", "params.mu: unknown key(s) ['step'] for type categorical"),
])
def test_keys_inside_a_parameter_are_checked(tmp_path, param, message):
    path = tmp_path / "space.yaml"
    path.write_text(f"workload: mtorl\nmetric: val_f1_macro\nparams:\n  mu: {param}\n")
    with pytest.raises(TuneSpaceError, match=re.escape(message)):
        load_space(path)


def test_a_metric_known_only_at_the_end_is_swept_once_per_trial(tmp_path):
    """Issue 22: VAMO's validation-day score exists once a trial has trained (report: final); the
    shipped space sweeps it from a config that asks for it (target_grid), never the evaluation days."""
    from adray.config import load_config
    from workloads.vamo import WORKLOAD

    space = load_space(REPO / "tune_spaces" / "vamo-valday.yaml", "vamo")
    assert (space.metric, space.mode, space.report) == ("val_day_score", "max", "final")
    assert load_config(WORKLOAD.config_cls, space.config, WORKLOAD.configs_dir).target_grid
    assert load_space(REPO / "tune_spaces" / "vamo.yaml", "vamo").report == "step"
    path = tmp_path / "space.yaml"
    path.write_text("workload: vamo\nmetric: val_loss\nreport: end\nparams:\n  lam: {type: float, low: 0.1, high: 1}\n")
    with pytest.raises(TuneSpaceError, match=re.escape("report='end': expected step")):
        load_space(path)
