"""Cross DQN config: the nested simulator config, training fields it really uses, named ablations,
and the workload's contract declaration."""

from __future__ import annotations

import pytest

from adray.config import ConfigError, available_configs, load_config, parse_set
from adray.workload import TrainContext, get_workload
from workloads.crossdqn import WORKLOAD
from workloads.crossdqn.config import CrossDQNConfig, FeedSimConfig
from workloads.crossdqn.train import ABLATIONS, CrossDQNTrainer, ablation_overrides


def test_training_fields_are_the_ones_the_trainer_uses() -> None:
    cfg = CrossDQNConfig()
    assert (cfg.lr, cfg.batch_size, cfg.grad_clip, cfg.iterations) == (1e-3, 1024, 0.0, 20)
    for gone in ("epochs", "weight_decay"):  # RLlib runs iterations; Adam without weight decay
        assert gone not in CrossDQNConfig.field_names()
        with pytest.raises(ConfigError, match=f"unknown key.*{gone}"):
            load_config(CrossDQNConfig, "smoke", WORKLOAD.configs_dir, parse_set([f"{gone}=3"]))
    smoke = load_config(CrossDQNConfig, "smoke", WORKLOAD.configs_dir)
    assert (smoke.batch_size, smoke.iterations, smoke.lr) == (128, 4, 3e-3)  # YAML over class defaults


def test_simulator_settings_are_a_nested_config() -> None:
    cfg = load_config(CrossDQNConfig, "smoke", WORKLOAD.configs_dir,
                      parse_set(["sim.eta=0.5", "sim.slots=4", "sim.neighbour_similarity=0"]))
    assert isinstance(cfg.sim, FeedSimConfig)
    assert (cfg.sim.eta, cfg.sim.slots, cfg.sim.neighbour_similarity) == (0.5, 4, 0.0)
    assert cfg.num_actions == cfg.sim.num_actions == 16  # follows slots
    assert cfg.to_dict()["sim"]["eta"] == 0.5 and CrossDQNConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"unknown key.*'neighbour_similarity'"):  # the old flat key
        cfg.override({"neighbour_similarity": 0.0})
    with pytest.raises(ConfigError, match=r"unknown key.*'sim\.etta'"):
        cfg.override({"sim.etta": 0.1})
    with pytest.raises(ConfigError, match=r"sim\.slots=9"):  # validation moved with the fields
        cfg.override({"sim.slots": 9})
    with pytest.raises(ConfigError, match=r"sim\.top_ad_penalty"):
        FeedSimConfig(top_ad_penalty=1.5)
    with pytest.raises(ConfigError, match="pae_target"):
        cfg.override({"pae_target": 2.0})


def test_ablation_configs_are_the_base_plus_their_overrides() -> None:
    names = set(available_configs(WORKLOAD.configs_dir))
    default = load_config(CrossDQNConfig, "default", WORKLOAD.configs_dir)
    smoke = load_config(CrossDQNConfig, "smoke", WORKLOAD.configs_dir)
    expected = {"no_aux": {"lam": 0.0}, "no_aux_mcau": {"lam": 0.0, "use_mcau": False},
                "no_aux_mcau_sacu": {"lam": 0.0, "use_mcau": False, "use_sacu": False}}
    assert set(ABLATIONS) == set(expected)
    for name, over in expected.items():
        assert ablation_overrides(name) == over
        assert load_config(CrossDQNConfig, name, WORKLOAD.configs_dir) == default.override(over)
        assert {name, f"smoke_{name}"} <= names
        assert load_config(CrossDQNConfig, f"smoke_{name}", WORKLOAD.configs_dir) == smoke.override(over)


def test_workload_declares_the_contract(tmp_path) -> None:
    wl = get_workload("crossdqn")
    assert wl is WORKLOAD and wl.config_cls is CrossDQNConfig
    t = wl.trainer
    assert (t.loop_field, t.objective, t.mode) == ("iterations", "reward_wdr", "max")
    assert wl.loop_length(load_config(CrossDQNConfig, "smoke", wl.configs_dir)) == 4
    assert (wl.headline.metric, wl.headline.baseline, wl.headline.mode) == ("reward", "random", "max")
    assert wl.policy.route == "allocate" and wl.make_data is not None
    ctx = TrainContext(data_dir=tmp_path, run_dir=tmp_path, run_name="r", storage=str(tmp_path))
    assert t.salvage(CrossDQNConfig(), ctx, None) is None


@pytest.mark.parametrize(("kw", "match"), [({"precision": "bf16"}, "--precision bf16"), ({"num_workers": 2}, "--workers 2")])
def test_trainer_refuses_what_it_cannot_honour(tmp_path, kw: dict, match: str) -> None:
    ctx = TrainContext(data_dir=tmp_path, run_dir=tmp_path, run_name="r", storage=str(tmp_path), **kw)
    with pytest.raises(ConfigError, match=match):
        CrossDQNTrainer().train(CrossDQNConfig(), ctx)
