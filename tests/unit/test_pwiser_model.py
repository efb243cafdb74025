"""pwiser networks: the inference contract, configs, tune space, and a model beating AUC 0.5."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from adray.config import ConfigError, load_config
from adray.workload import get_workload
from workloads.pwiser import WORKLOAD, PWiseRConfig
from workloads.pwiser.data import load_split, make_data, model_meta
from workloads.pwiser.evaluate import evaluate
from workloads.pwiser.model import build_model
from workloads.pwiser.train import loss

REPO = Path(__file__).resolve().parents[2]
META = {"feature_map": {"categorical": [{"name": "a", "vocab_size": 7}, {"name": "b", "vocab_size": 3}],
                        "numeric": ["x", "y", "z"], "labels": ["click", "conversion"]}}
SMALL = PWiseRConfig(embedding_dim=4, expert_units=(8,), tower_units=(4,), bottom_units=(8,), dnn_units=(8,),
                     num_experts=2, num_specific_experts=1, num_levels=2, mask_block_dim=8)


@pytest.mark.parametrize("name", ["sharedbottom", "mmoe", "ple", "dnn", "masknet"])
def test_inference_contract(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(SMALL.override({"model": name}), META).eval()
    x_cat = torch.tensor([[0, 1], [6, 2], [3, 0], [5, 1], [1, 1]])  # (B=5, C=2) incl. unknown id 0
    x_num = torch.randn(5, 3)
    out = model(x_cat, x_num)
    expected = {"ctr", "cvr", "ctcvr"} if name in ("sharedbottom", "mmoe", "ple") else {"ctr"}
    assert set(out) == expected
    for v in out.values():
        assert v.shape == (5,) and ((v > 0) & (v < 1)).all()
    if "ctcvr" in out:
        torch.testing.assert_close(out["ctcvr"], out["ctr"] * out["cvr"])
    # a row's prediction does not depend on the other rows of the batch (eval mode)
    torch.testing.assert_close(model(x_cat[:1], x_num[:1])["ctr"], out["ctr"][:1])
    _, stats = loss(model.train(), {"x_cat": x_cat, "x_num": x_num, "click": torch.tensor([1.0, 1, 0, 0, 1]),
                                    "conversion": torch.tensor([1.0, 0, 0, 0, 0])}, SMALL.override({"model": name}))
    assert np.isfinite(list(stats.values())).all()


def test_registered_and_configs_load() -> None:
    assert get_workload("pwiser") is WORKLOAD
    for name in ("default", "smoke", "aliexpress"):
        cfg = load_config(PWiseRConfig, name, WORKLOAD.configs_dir)
        assert cfg.m1 == 0.3 and cfg.lam == 0.1
    assert load_config(PWiseRConfig, "aliexpress", WORKLOAD.configs_dir).import_format == "aliexpress"


@pytest.mark.parametrize("bad", [{"m1": 1.5}, {"lam": -0.1}, {"model": "xgboost"}, {"noise_click_share": 1.0},
                                 {"tower_units": []}, {"lamda": 0.1}])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ConfigError):
        PWiseRConfig().override(bad)


def test_tune_space_keys_are_config_fields() -> None:
    space = yaml.safe_load((REPO / "tune_spaces" / "pwiser.yaml").read_text())
    assert space["workload"] == "pwiser" and space["metric"] == "val_auc_ctr" and space["mode"] == "max"
    fields = set(PWiseRConfig.field_names())
    assert set(space["params"]) <= fields and set(space["grid"]) <= fields
    load_config(PWiseRConfig, space["config"], WORKLOAD.configs_dir)
    for key, values in space["grid"].items():
        for v in values:
            assert getattr(PWiseRConfig().override({key: v}), key) == v


@pytest.mark.parametrize("name", ["mmoe", "dnn"])
def test_few_steps_beat_auc_half(tmp_path: Path, name: str) -> None:
    cfg = PWiseRConfig(model=name, rows=12_000, num_users=200, num_items=100, ctr=0.15, cvr=0.2,
                       embedding_dim=8, expert_units=(32,), tower_units=(16,), dnn_units=(32,), num_experts=2,
                       batch_size=256, seed=3)
    make_data(cfg, tmp_path / "ds")
    train, test = load_split(tmp_path / "ds", "train", cfg), load_split(tmp_path / "ds", "test", cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, model_meta(tmp_path / "ds", cfg))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(cfg.seed)
    for _ in range(2):
        perm = rng.permutation(len(train["click"]))
        for s in range(0, len(perm), cfg.batch_size):
            batch = {k: torch.from_numpy(v[perm[s:s + cfg.batch_size]]) for k, v in train.items()}
            value, _ = loss(model, batch, cfg)
            opt.zero_grad()
            value.backward()
            opt.step()
    metrics = evaluate(model, test, cfg)
    assert metrics["auc_ctr"] > 0.62, metrics
    assert metrics["auc_ctcvr"] > 0.75, metrics


def test_sample_rows_is_a_seeded_uniform_sample_held_n_rows_at_a_time() -> None:
    """The logistic-regression baseline's training sample, drawn from a stream of row groups."""
    from workloads.pwiser.evaluate import sample_rows

    def stream(n: int, size: int = 700) -> Iterator[dict[str, np.ndarray]]:
        return ({"i": np.arange(a, min(a + size, n))} for a in range(0, n, size))

    small = sample_rows(stream(1500), 2000, seed=3)["i"]  # fewer rows than asked: all, permuted as before
    assert small.tolist() == np.random.default_rng(3).permutation(1500).tolist()
    big = sample_rows(stream(100_000), 2000, seed=3)["i"]
    assert len(big) == len(set(big.tolist())) == 2000
    assert sample_rows(stream(100_000), 2000, seed=3)["i"].tolist() == big.tolist()  # seeded
    assert sample_rows(stream(100_000), 2000, seed=4)["i"].tolist() != big.tolist()
    assert abs(big.mean() - 50_000) < 3 * 100_000 / np.sqrt(12 * 2000)  # uniform over the stream
    assert (np.histogram(big, bins=10, range=(0, 100_000))[0] > 120).all()
