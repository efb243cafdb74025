"""Task weightings against hand-computed values; 2 data-parallel workers give the weights of 1."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from workloads.vamo.batches import make_batch, split_batch
from workloads.vamo.config import VamoConfig
from workloads.vamo.model import VamoNet
from workloads.vamo.step import MultiTask, StepContext, task_gradients, val_gradient
from workloads.vamo.weighting import DWA, FAMO, fairgrad_weights, pcgrad, vamo_weights, vanilla_weights

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


CFG = VamoConfig(context=4, history=4, hidden=8, heads=2, layers=1, head_hidden=8, top_k=2, batch_size=24,
                 weighting="vamo", lam=0.5)


def _toy() -> tuple[VamoNet, dict, dict]:
    rng = np.random.default_rng(0)
    m, steps = 12, 10
    arrays = {"states": rng.normal(size=(m, steps, 16)).astype(np.float32),
              "action": rng.uniform(0.5, 1.5, (m, steps)).astype(np.float32),
              "rtg": rng.uniform(0, 5, (m, steps)).astype(np.float32), "valid": np.ones((m, steps), bool),
              "task": np.arange(m) % 3}
    torch.manual_seed(0)
    net = VamoNet(n_tasks=3, context=CFG.context, history=CFG.history, hidden=CFG.hidden, layers=1, heads=2,
                  dropout=0.0, temporal="timesnet", periods=(4, 2), kernels=2, head_hidden=8, max_steps=steps,
                  state_mean=[0.0] * 16, state_std=[1.0] * 16)
    mi, ti = rng.integers(0, m, 24), rng.integers(0, steps, 24)
    batch = make_batch(arrays, mi, ti, CFG.context, CFG.history, 1.0)
    val = make_batch(arrays, rng.integers(0, m, 24), rng.integers(0, steps, 24), CFG.context, CFG.history, 1.0)
    return net, batch, val


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


def _worker(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    net, batch, val = _toy()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def all_reduce(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    metrics = MultiTask(CFG, net).step(net, opt, split_batch(batch, 2)[rank], split_batch(val, 2)[rank],
                                       StepContext(all_reduce=all_reduce))
    torch.save({"metrics": metrics, "params": [p.detach() for p in net.parameters()]}, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes import torch: ~10 s idle, ~30 s on the shared machine
def test_two_gloo_workers_take_the_step_of_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(f"file://{tmp_path / 'rdv'}", str(tmp_path / "out")), nprocs=2, join=True)
    net, batch, val = _toy()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    want = MultiTask(CFG, net).step(net, opt, batch, val, StepContext())
    for rank in range(2):
        got = torch.load(tmp_path / f"out.{rank}", weights_only=False)
        for k, v in want.items():
            assert got["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-9), k
        for p, q in zip(net.parameters(), got["params"]):
            torch.testing.assert_close(q, p.detach(), rtol=1e-5, atol=1e-7)
    assert not math.isclose(want["w_gmv"], 1 / 3)
