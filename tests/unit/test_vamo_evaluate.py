"""VAMO evaluation: opponent seeds (which baseline each opponent bids with) and their mean +- std."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.vamo.bidders import FixedAlpha, OnlineLp, PidBudget, PidCpa
from workloads.vamo.config import SimConfig
from workloads.vamo.data import lp_table
from workloads.vamo.evaluate import controlled, eval_day, opponents, run_bidder
from workloads.vamo.world import make_advertisers

SMALL = SimConfig(impressions=20_000, steps=12, task_advertisers=(4, 4, 4), chunk_rows=1024)


def _groups(out: list) -> dict[type, np.ndarray]:
    return {type(b): idx for idx, b in out}


def test_an_opponent_seed_deals_the_four_baselines_in_equal_groups() -> None:
    lp = lp_table(SMALL, 0)
    adv = make_advertisers(SMALL, 0)
    others = np.setdiff1d(np.arange(adv.n), controlled(adv.task))  # 6 opponents
    a = _groups(opponents(others, lp, np.random.default_rng([0, 98, 5, 0])))
    assert set(a) == {FixedAlpha, PidBudget, PidCpa, OnlineLp}
    assert sorted(np.concatenate(list(a.values()))) == others.tolist()  # each opponent bids once
    assert sorted(len(v) for v in a.values()) == [1, 1, 2, 2]
    same = _groups(opponents(others, lp, np.random.default_rng([0, 98, 5, 0])))
    assert all((same[k] == a[k]).all() for k in a)  # a seed is a fixed draw
    draws = [_groups(opponents(others, lp, np.random.default_rng([0, 98, 5, j]))) for j in range(1, 6)]
    assert any(any(not np.array_equal(d[k], a[k]) for k in a) for d in draws)  # seeds differ
    fixed = _groups(opponents(others, lp))  # no rng: every fourth opponent in order
    assert (fixed[FixedAlpha] == others[0::4]).all() and (fixed[OnlineLp] == others[3::4]).all()


def test_run_bidder_means_over_days_and_opponent_seeds_with_the_std_over_seeds() -> None:
    lp = lp_table(SMALL, 0)
    days = [5, 6]
    out = run_bidder(SMALL, 0, FixedAlpha, days, lp, opponent_seeds=2)
    cells = {(d, j): eval_day(SMALL, 0, d, FixedAlpha, lp, j) for d in days for j in range(2)}
    per_seed = [np.mean([cells[d, j]["score"] for d in days]) for j in range(2)]
    assert out["score"] == pytest.approx(np.mean(per_seed))
    assert out["score_std"] == pytest.approx(np.std(per_seed))
    assert {"gmv", "dir_gmv", "cart", "gmv_std", "cart_std"} <= set(out)
    one = run_bidder(SMALL, 0, FixedAlpha, days, lp)
    assert one["score_std"] == 0.0


def test_each_task_s_target_is_chosen_on_the_validation_day_never_an_evaluation_day(monkeypatch) -> None:  # noqa: ANN001
    import dataclasses

    from workloads.vamo import evaluate
    from workloads.vamo.config import VamoConfig

    @dataclasses.dataclass
    class Net:  # what choose_target needs of a model: its cfg (the target is bid through ModelBidder)
        cfg: VamoConfig

    cfg = VamoConfig(train_days=4, eval_days=2, eval_seeds=3)
    seen: list[tuple[list[int], float, int]] = []
    table = {1.0: (10.0, 5.0, 1.0), 2.0: (30.0, 5.0, 2.0), 3.0: (30.0, 1.0, 9.0), 4.0: (5.0, 0.0, 3.0)}

    def fake_run_bidder(sim, seed, make, days, lp, opponent_seeds, parallel=True):  # noqa: ANN001, ANN202
        model = make().model
        assert model.cfg.task_targets == ()  # the grid bids one target for every task
        t = model.cfg.target_return
        seen.append((list(days), t, opponent_seeds))
        gmv, dir_gmv, cart = table[t]
        return {"gmv": gmv, "dir_gmv": dir_gmv, "cart": cart, "score": gmv + dir_gmv + cart, "score_std": 0.0}

    monkeypatch.setattr(evaluate, "run_bidder", fake_run_bidder)
    monkeypatch.setattr(evaluate, "market_of", lambda cfg, data_dir: (SMALL, 0))
    best, metrics = evaluate.choose_target(cfg, "unused", Net(cfg), [4.0, 2.0, 1.0, 3.0, 2.0])
    # per task its own metric's best; of equal ones, the smaller target (gmv: 2 and 3; dir_gmv: 1 and 2)
    assert best == (2.0, 1.0, 3.0)
    assert metrics[3.0] == {"gmv": 30.0, "dir_gmv": 1.0, "cart": 9.0, "score": 40.0} and set(metrics) == set(table)
    val = evaluate.validation_day(cfg)
    assert val == 5 and val not in evaluate.eval_days(cfg)  # day 5: after the 4 training days
    assert all(days == [val] and n == 3 for days, _, n in seen) and len(seen) == 4
    chosen = evaluate.at_target(Net(cfg), best)
    assert chosen.cfg.task_targets == best and evaluate.at_target(chosen, 2.0).cfg.task_targets == ()
    with pytest.raises(ValueError, match="target grid"):
        evaluate.choose_target(cfg, "unused", Net(cfg), [0.0, 1.0])


def test_select_targets_bids_the_chosen_targets_once_more_and_target_grid_is_checked(monkeypatch) -> None:  # noqa: ANN001
    import dataclasses

    from workloads.vamo import evaluate
    from workloads.vamo.config import VamoConfig

    @dataclasses.dataclass
    class Net:
        cfg: VamoConfig

    cfg = VamoConfig(train_days=4, eval_days=2, eval_seeds=2)
    bids: list[tuple[float, ...] | float] = []

    def fake_run_bidder(sim, seed, make, days, lp, opponent_seeds, parallel=True):  # noqa: ANN001, ANN202
        c = make().model.cfg
        bids.append(c.task_targets or c.target_return)
        assert days == [evaluate.validation_day(cfg)]
        t = c.target_return if not c.task_targets else sum(c.task_targets)
        return {"gmv": 10 - abs(t - 2), "dir_gmv": 10 - abs(t - 1), "cart": t, "score": 7.0 * t}

    monkeypatch.setattr(evaluate, "run_bidder", fake_run_bidder)
    monkeypatch.setattr(evaluate, "market_of", lambda cfg, data_dir: (SMALL, 0))
    monkeypatch.setattr(evaluate, "lp_table", lambda *a: pytest.fail("the LpTable is given"))
    record = evaluate.select_targets(cfg, "unused", Net(cfg), (1.0, 2.0, 3.0), lp=object())
    assert record["task_targets"] == [2.0, 1.0, 3.0] and bids == [1.0, 2.0, 3.0, (2.0, 1.0, 3.0)]
    assert record["val_day"]["score"] == 42.0 and set(record["grid"]) == {"1", "2", "3"}
    assert record["validation_day"] == 5 and record["opponent_seeds"] == 2
    with pytest.raises(ValueError, match=r"target_grid=\[1.0, 0.0\]: expected numbers > 0"):
        VamoConfig.from_dict({"target_grid": [1.0, 0.0]})
    with pytest.raises(ValueError, match="give one"):
        VamoConfig.from_dict({"target_grid": [1.0], "task_targets": [1.0, 1.0, 1.0]})
