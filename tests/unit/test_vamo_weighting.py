"""Task weightings against hand-computed values; through the harness's epoch loop, 2 data-parallel
ranks take the step (weights, parameters) of 1 on the same global batch."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adray.epochs import LoopState, allreduce_sum, run_epochs
from workloads.vamo.batches import make_batch, split_batch
from workloads.vamo.config import VamoConfig
from workloads.vamo.model import VamoNet
from workloads.vamo.step import MultiTask, task_gradients, val_gradient, vamo_step
from workloads.vamo.train import make_spec
from workloads.vamo.weighting import (
    DWA,
    FAMO,
    GainAverage,
    fairgrad_weights,
    pcgrad,
    vamo_weights,
    vanilla_weights,
)

ALL = torch.tensor([True, True, True])


def _softmax(x: list[float]) -> np.ndarray:
    e = np.exp(np.asarray(x) - max(x))
    return e / e.sum()


def test_vamo_weights_hand_case() -> None:
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    g_val = torch.tensor([1.0, 2.0])
    w, m = vamo_weights(G, g_val, 1.0, ALL)
    np.testing.assert_allclose(m, [1.0, 2.0, 3.0])  # m_k = <g_val, g_k> (Eq. 7)
    np.testing.assert_allclose(w, _softmax([1, 2, 3]), rtol=1e-12)  # Eq. 9
    np.testing.assert_allclose(vamo_weights(G, g_val, 1e-3, ALL)[0], [0, 0, 1], atol=1e-12)  # greedy
    np.testing.assert_allclose(vamo_weights(G, g_val, 1e6, ALL)[0], [1 / 3] * 3, rtol=1e-5)  # Vanilla
    np.testing.assert_allclose(vamo_weights(G, g_val, 1.0, ALL, normalize=True)[0], _softmax([1 / 3, 2 / 3, 1]))
    w, _ = vamo_weights(G, g_val, 1.0, torch.tensor([True, True, False]))  # task 3 not in the batch
    np.testing.assert_allclose(w, [*_softmax([1, 2]), 0.0])


def test_gain_average_hand_case() -> None:
    """gain_avg: the softmax of the bias-corrected moving average of the scaled gains (Adam's
    correction: after one step the average is that step's gains); an absent task's stays put."""
    avg = GainAverage(3, beta=0.5)
    G1, G2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    g_val = torch.tensor([1.0, 2.0])
    w, m = vamo_weights(G1, g_val, 1.0, ALL, normalize=True, average=avg)  # m = 1, 2, 3; scaled 1/3, 2/3, 1
    np.testing.assert_allclose(m, [1.0, 2.0, 3.0])  # the step's own gains are still reported
    np.testing.assert_allclose(w, _softmax([1 / 3, 2 / 3, 1]), rtol=1e-12)
    present = torch.tensor([True, True, False])
    w, m = vamo_weights(G2, g_val, 1.0, present, normalize=True, average=avg)  # m = 2, 1, (3); scaled 1, 1/2
    # avg: task 1: (0.5 * 0.5 * 1/3 + 0.5 * 1) / (1 - 0.25); task 2: (0.5 * 0.5 * 2/3 + 0.5 * 1/2) / 0.75
    np.testing.assert_allclose(avg.avg[:2], [0.5 * 0.5 / 3 + 0.5, 0.5 * 0.5 * 2 / 3 + 0.25], rtol=1e-12)
    np.testing.assert_allclose(w, [*_softmax([(1 / 12 + 0.5) / 0.75, (1 / 6 + 0.25) / 0.75]), 0.0], rtol=1e-12)
    np.testing.assert_allclose(avg.avg[2], 0.5 * 1.0)  # task 3 was absent: its average did not move
    np.testing.assert_allclose(avg.steps, [2, 2, 1])
    again = GainAverage(3, beta=0.5)
    again.load_state_dict(avg.state_dict())  # the checkpointed state resumes the same average
    np.testing.assert_allclose(again(torch.ones(3), ALL), avg(torch.ones(3), ALL))


def test_vanilla_weights() -> None:
    np.testing.assert_allclose(vanilla_weights(torch.tensor([True, False, True])), [0.5, 0, 0.5])


def test_dwa_hand_case() -> None:
    dwa = DWA(3, temperature=2.0)
    np.testing.assert_allclose(dwa.weights(ALL), [1 / 3] * 3)  # first two epochs: equal
    dwa.end_epoch(np.array([2.0, 2.0, 2.0]))
    dwa.end_epoch(np.array([1.0, 2.0, 4.0]))  # r = L(e-1) / L(e-2) = 0.5, 1, 2
    np.testing.assert_allclose(dwa.weights(ALL), _softmax([0.25, 0.5, 1.0]))


def test_famo_hand_case() -> None:
    famo = FAMO(3, lr=0.025, gamma=0.0)
    losses = torch.tensor([1.0, 2.0, 4.0])
    np.testing.assert_allclose(famo.weights(losses, ALL), [4 / 7, 2 / 7, 1 / 7], rtol=1e-6)  # z_k / L_k
    # task 1's loss halved: delta = (log 2, 0, 0); grad of softmax: z_i (delta_i - z.delta) =
    # (2/9 log 2, -1/9 log 2, -1/9 log 2); Adam's first step moves each logit by lr against its sign
    famo.update(losses, torch.tensor([0.5, 2.0, 4.0]), ALL)
    np.testing.assert_allclose(famo.logits.detach(), [-0.025, 0.025, 0.025], rtol=1e-4)
    w = famo.weights(losses, ALL)
    assert w[0] < 4 / 7  # the task that improved fastest is weighted down


def test_pcgrad_hand_cases() -> None:
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # conflicting: g1.g2 = -1
    # g1 - (-1/2) g2 = (0.5, 0.5); g2 - (-1/1) g1 = (0, 1); mean (0.25, 0.75)
    np.testing.assert_allclose(pcgrad(G, torch.tensor([True, True])), [0.25, 0.75])
    G = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # no conflict: the plain mean
    np.testing.assert_allclose(pcgrad(G, torch.tensor([True, True])), [1.0, 0.5])


def test_fairgrad_hand_cases() -> None:
    G = torch.tensor([[2.0, 0.0], [0.0, 4.0]])  # orthogonal: |g_k|^2 w_k = w_k^(-1/alpha)
    np.testing.assert_allclose(fairgrad_weights(G, torch.tensor([True, True]), 1.0), [1 / 2, 1 / 4], rtol=1e-6)
    np.testing.assert_allclose(fairgrad_weights(G, torch.tensor([True, True]), 2.0),
                               [4 ** (-2 / 3), 16 ** (-2 / 3)], rtol=1e-6)  # w = |g|^(-2 alpha/(1+alpha))
    G = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)) * 1e-3  # small gradients
    w = fairgrad_weights(G, ALL, 1.0).numpy()
    gtg = (G.double() @ G.double().T).numpy()
    np.testing.assert_allclose(gtg @ w, 1 / w, rtol=1e-6)


def test_fairgrad_newton_finds_the_least_squares_root_and_falls_back_where_there_is_none() -> None:
    """The damped Newton solve gives the authors' least-squares root (to 1e-9 relative) over random
    gradients of many scales, partly aligned, at three alphas. A task with a zero gradient has no
    root: its weight grows until the residual is within tolerance (as least squares' does), finite,
    and the other task's weight is its own root."""
    from scipy.optimize import least_squares

    from workloads.vamo.weighting import _fairgrad_newton

    gen = torch.Generator().manual_seed(1)
    for trial in range(30):
        alpha = (0.5, 1.0, 2.0)[trial % 3]
        G = (torch.randn(1, 200, generator=gen) * trial / 10 + torch.randn(3, 200, generator=gen)) * 10.0 ** (trial % 7 - 5)
        B = (G.double() @ G.double().T).numpy()
        B = B / np.abs(B).max()
        ls = least_squares(lambda y, B=B, a=alpha: B @ y - y ** (-1.0 / a), np.ones(3), bounds=(1e-9, np.inf),
                           xtol=1e-15, ftol=1e-15, gtol=1e-15).x
        np.testing.assert_allclose(_fairgrad_newton(B, alpha), ls, rtol=1e-9)
    w = fairgrad_weights(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([True, True]), 1.0)
    assert torch.isfinite(w).all() and w[0] == pytest.approx(1.0, rel=1e-6)


CFG = VamoConfig(context=4, history=4, hidden=8, heads=2, layers=1, head_hidden=8, top_k=2, batch_size=24,
                 weighting="vamo", lam=0.5, epochs=3, lr=0.05, grad_clip=1.0)


def _net() -> VamoNet:
    torch.manual_seed(0)
    return VamoNet(n_tasks=3, context=CFG.context, history=CFG.history, hidden=CFG.hidden, layers=1, heads=2,
                   dropout=0.0, temporal="timesnet", periods=(4, 2), kernels=2, head_hidden=8, max_steps=10,
                   state_mean=[0.0] * 16, state_std=[1.0] * 16)


def _windows(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` windows (the rows ``load_windows`` gives the harness) of random trajectories; task
    shares 1/2, 1/3, 1/6 (the tasks differ in data, as in the paper)."""
    rng = np.random.default_rng(seed)
    m, steps = 12, 10
    arrays = {"states": rng.normal(size=(m, steps, 16)).astype(np.float32),
              "action": rng.uniform(0.5, 1.5, (m, steps)).astype(np.float32),
              "rtg": rng.uniform(0, 5, (m, steps)).astype(np.float32), "valid": np.ones((m, steps), bool),
              "task": np.array([0] * 6 + [1] * 4 + [2] * 2)}
    arrays["action"][arrays["task"] == 2] *= 3.0  # a task unlike the others: weights are not uniform
    b = make_batch(arrays, rng.integers(0, m, n), rng.integers(0, steps, n), CFG.context, CFG.history, 1.0)
    return {k: v.numpy() for k, v in b.items()}


def _toy() -> tuple[VamoNet, dict, dict]:
    train, val = _windows(24, 0), _windows(24, 1)
    return _net(), {k: torch.from_numpy(v) for k, v in train.items()}, {k: torch.from_numpy(v) for k, v in val.items()}


def _weights(net: VamoNet, shards: list[dict], vshards: list[dict], reduce=lambda xs: sum(xs)):
    """The step's weights from per-worker unreduced quantities combined with ``reduce``."""
    parts = [task_gradients(net, b, 3) for b in shards]
    g, s, c = (reduce([p[i] for p in parts]) for i in range(3))
    vparts = [val_gradient(net, b, 3) for b in vshards]
    gv, _, vc = (reduce([p[i] for p in vparts]) for i in range(3))
    mt = MultiTask(CFG, net)
    G = g / c.clamp_min(1)[:, None]
    w, m = mt.weights(G, s / c, c > 0, gv / vc)
    return w, m


def test_two_shards_give_the_weights_of_the_global_batch() -> None:
    net, batch, val = _toy()
    w1, m1 = _weights(net, [batch], [val])
    w2, m2 = _weights(net, split_batch(batch, 2), split_batch(val, 2))
    np.testing.assert_allclose(m2, m1, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(w2, w1, rtol=1e-6)
    assert not np.allclose(w1, 1 / 3)  # the check is not trivially uniform


def test_the_epoch_row_has_the_cosines_of_the_task_gradients_hand_computed() -> None:
    """Two steps: gmv and dir_gmv opposite (cos -1), cart along gmv at 45 degrees (cos 0.7071) and
    absent in the second step; the validation gradient along gmv. Means over the steps with both."""
    mt = MultiTask(CFG, _net())
    n = int(mt.shared.sum())
    def vec(*xy: float) -> torch.Tensor:
        v = torch.zeros(n, dtype=torch.float64)
        v[: len(xy)] = torch.tensor(xy, dtype=torch.float64)
        return v
    G = torch.stack([vec(1, 0), vec(-2, 0), vec(1, 1)])
    mt._agreement(G, torch.tensor([True, True, True]), vec(3, 0))
    mt._agreement(torch.stack([vec(0, 1), vec(0, 1), vec(0, 0)]), torch.tensor([True, True, False]), vec(0, 1))
    row: dict[str, float] = {}
    mt._accumulate(torch.zeros(3), torch.tensor([True] * 3), torch.tensor([0.5, 0.25, 0.25]), None)
    mt._accumulate(torch.zeros(3), torch.tensor([True] * 3), torch.tensor([0.1, 0.45, 0.45]), None)
    mt.end_epoch(row)
    assert row["train_w_gmv"] == pytest.approx(0.3) and row["train_w_sd_gmv"] == pytest.approx(0.2)
    assert row["train_w_sd_cart"] == pytest.approx(0.1)
    assert row["train_cos_gmv_dir_gmv"] == pytest.approx((-1 + 1) / 2)  # step 2 agrees: the mean is 0
    assert row["train_cos_gmv_cart"] == pytest.approx(2 ** -0.5)  # step 1 only
    assert row["train_conflict_gmv_dir_gmv"] == 0.5 and row["train_conflict_gmv_cart"] == 0.0
    assert row["train_cos_val_gmv"] == pytest.approx(1.0) and row["train_cos_val_dir_gmv"] == pytest.approx(0.0)
    assert row["train_cos_val_cart"] == pytest.approx(2 ** -0.5)


class _Group:
    """``world`` ranks in threads of this process, and the SUM all-reduce the harness gives a
    custom step (``ctx.all_reduce``: in place), simulated with a barrier."""

    def __init__(self, world: int) -> None:
        self.barrier, self.slots, self.total = threading.Barrier(world, timeout=60), [None] * world, None

    def all_reduce(self, rank: int):  # noqa: ANN201
        def reduce(t: torch.Tensor) -> torch.Tensor:
            self.slots[rank] = t
            self.barrier.wait()
            if rank == 0:
                self.total = sum(x.clone() for x in self.slots)
            self.barrier.wait()
            t.copy_(self.total)
            self.barrier.wait()  # nobody starts the next reduce before every rank has its sum
            return t

        return reduce


def _train(cfg: VamoConfig, world: int) -> list[tuple[VamoNet, list[dict[str, float]], LoopState]]:
    """``cfg.epochs`` epochs of the harness's loop (``run_epochs``) with the VAMO step on ``world``
    ranks; per rank its model, the stats of every step and the loop state."""
    train, val = _windows(96, 0), _windows(48, 1)  # 4 steps of 24 rows an epoch
    group, out = _Group(world), [None] * world
    nets = [_net() for _ in range(world)]  # here: torch's global RNG is not for threads
    errors: list[BaseException] = []

    def rank_main(rank: int) -> None:
        try:
            stats: list[dict[str, float]] = []

            def step(*args):  # noqa: ANN002, ANN202
                stats.append(vamo_step(*args))
                return stats[-1]

            spec = dataclasses.replace(make_spec(), step=step)
            net = nets[rank]
            # SGD, not the harness's Adam: Adam scales every coordinate to ~lr, so coordinates whose
            # gradient is 0 but for rounding (the attention's key bias) would move by +-lr on
            # rounding noise alone, and 1 and 2 workers round differently
            opt = torch.optim.SGD(net.parameters(), lr=cfg.lr)
            state = run_epochs(spec, cfg, net, opt, train, val, state=LoopState(), rank=rank, world=world,
                               all_reduce_sum=group.all_reduce(rank) if world > 1 else None)
            out[rank] = (net, stats, state)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            group.barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out  # type: ignore[return-value]


@pytest.mark.parametrize("method", ["vamo", "vamo_train", "vanilla", "dwa", "famo", "pcgrad", "fairgrad"])
def test_two_ranks_of_the_harness_take_the_steps_of_one(method: str) -> None:
    cfg = CFG.override({"weighting": method})
    ((one, want, state1),) = _train(cfg, 1)
    ranks = _train(cfg, 2)
    assert len(want) == cfg.epochs * 4
    for net, got, _ in ranks:
        assert len(got) == len(want)
        for a, b in zip(got, want):  # every step: the same task weights (and gains, losses)
            assert a.keys() == b.keys()
            for k in a:
                assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
        for p, q in zip(net.parameters(), one.parameters()):  # the same parameters after 12 steps
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    for p, q in zip(ranks[0][0].parameters(), ranks[1][0].parameters()):
        assert torch.equal(p, q)  # the ranks apply the same update, bit for bit
    if method in ("vamo", "famo", "dwa", "fairgrad", "vamo_train"):  # not trivially uniform
        assert any(abs(s["w_cart"] - 1 / 3) > 1e-3 for s in want)
    assert {"train_w_gmv", "train_loss_cart", "val_loss", "train_cos_gmv_cart"} <= set(state1.history[-1])
    assert -1 <= state1.history[-1]["train_cos_gmv_cart"] <= 1
    assert ("train_cos_val_gmv" in state1.history[-1]) == (method == "vamo")
    if method == "dwa":  # DWA's state: the epoch losses the ranks reduced, the same on each
        assert len(ranks[0][2].step_state.dwa.history) == cfg.epochs
        np.testing.assert_allclose(ranks[1][2].step_state.dwa.history, state1.step_state.dwa.history, rtol=1e-4)


def _worker(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    net = _net()
    run_epochs(make_spec(), CFG, net, torch.optim.SGD(net.parameters(), lr=CFG.lr), _windows(96, 0),
                       _windows(48, 1), state=LoopState(), rank=rank, world=2, all_reduce_sum=allreduce_sum())
    torch.save({"params": [p.detach() for p in net.parameters()]}, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes import torch: ~10 s idle, ~30 s on the shared machine
def test_two_gloo_workers_take_the_steps_of_one_process(tmp_path: Path) -> None:
    """The same through a real process group and the harness's own all-reduce (as in Ray Train)."""
    mp.spawn(_worker, args=(f"file://{tmp_path / 'rdv'}", str(tmp_path / "out")), nprocs=2, join=True)
    ((net, _, _),) = _train(CFG, 1)
    for rank in range(2):
        got = torch.load(tmp_path / f"out.{rank}", weights_only=False)
        for p, q in zip(net.parameters(), got["params"]):
            torch.testing.assert_close(q, p.detach(), rtol=1e-4, atol=1e-5)
