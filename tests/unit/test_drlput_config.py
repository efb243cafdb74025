"""DRL-PUT config: named configs load, bad values are refused by name, the tune space fits the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from adray.config import ConfigError, load_config
from workloads.drlput.config import DRLPUTConfig

CONFIGS = Path(__file__).resolve().parents[2] / "workloads" / "drlput" / "configs"
SPACE = Path(__file__).resolve().parents[2] / "tune_spaces" / "drlput.yaml"


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_named_configs_load_and_round_trip(name: str) -> None:
    cfg = load_config(DRLPUTConfig, name, CONFIGS)
    assert DRLPUTConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(("override", "message"), [
    ({"sim.base_ctr": 1.5}, "sim.base_ctr=1.5"),
    ({"reward.variant": "R9"}, "variant='R9'"),
    ({"action.w_conv": [3, 1]}, r"action.w_conv=\(3.0, 1.0\): expected 0 <= low < high"),
    ({"behaviour.policy": "greedy"}, "policy='greedy'"),
    ({"importance": "clip"}, "importance='clip'"),
    ({"sim.nads": 3}, r"unknown key\(s\) \['sim.nads'\]"),
])
def test_bad_values_are_refused_by_name(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DRLPUTConfig().override(override)


def test_tune_space_keys_are_config_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    import workloads
    from adray.tune import load_space

    monkeypatch.setitem(workloads.WORKLOADS, "drlput", "workloads.drlput")  # until the registry has it
    space = load_space(SPACE, "drlput")
    assert {"lr", "action.n_values", "batch_size"} <= set(space.params) and space.metric == "val_snips"
    base = load_config(DRLPUTConfig, space.config, CONFIGS)
    assert base.data == "generate"  # a trial with another action space gets its own logs
    for name, spec in space.params.items():
        for value in spec.get("choices", [spec.get("low"), spec.get("high")]):
            base.override({name: value})
