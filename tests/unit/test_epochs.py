"""The one epoch loop: best-epoch selection (NaN never wins, never blocks), resume, the same loop
in process as in the Ray Train workers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from adray.epochs import LoopState, better, run_epochs


def test_better_nan_never_wins_and_never_blocks() -> None:
    nan = float("nan")
    assert better(nan, None, "max")  # the first epoch is kept provisionally
    assert better(0.6, nan, "max") and better(0.6, nan, "min")  # a finite score replaces a NaN best
    assert not better(nan, 0.6, "max") and not better(nan, 0.6, "min")
    assert not better(nan, nan, "max")
    assert better(0.7, 0.6, "max") and not better(0.6, 0.6, "max") and better(0.5, 0.6, "min")


@dataclasses.dataclass(frozen=True)
class _Cfg:
    epochs: int = 4
    batch_size: int = 8
    seed: int = 0
    grad_clip: float = 0.0


class _Spec:
    """A linear model whose validation 'AUC' is NaN in epoch 0 (a one-class split), then scripted."""

    objective, mode = "auc", "max"

    def __init__(self, scores: list[float]) -> None:
        self.scores, self.calls = scores, 0

    def loss(self, model, batch, cfg):  # noqa: ANN001, ANN201
        return ((model(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean(), {}

    def evaluate(self, model, arrays, cfg):  # noqa: ANN001, ANN201
        self.calls += 1
        return {"auc": self.scores[self.calls - 1]}


def _data(n: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return {"x": x, "y": (x @ np.array([1.0, -2.0, 0.5], np.float32))}


def test_nan_first_epoch_does_not_block_best_epoch_selection() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    spec = _Spec([float("nan"), 0.61, 0.59, float("nan")])
    state = run_epochs(spec, _Cfg(), model, torch.optim.Adam(model.parameters(), 1e-2), _data(), _data(),
                       state=LoopState())
    assert state.best["best_epoch"] == 1 and state.best["val_auc"] == 0.61
    assert len(state.history) == 4 and math.isnan(state.history[0]["val_auc"])
    for k, v in model.state_dict().items():  # best_state is a copy of epoch 1, not the final weights
        assert not torch.equal(v, state.best_state[k])


def test_all_nan_keeps_the_first_epoch() -> None:
    model = torch.nn.Linear(3, 1)
    spec = _Spec([float("nan")] * 4)
    state = run_epochs(spec, _Cfg(), model, torch.optim.SGD(model.parameters(), 1e-2), _data(), _data(),
                       state=LoopState())
    assert state.best["best_epoch"] == 0 and state.best_state is not None


def test_resume_continues_where_it_stopped_with_the_same_result() -> None:
    def run(stop_after: int | None) -> tuple[LoopState, torch.nn.Module]:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        spec = _Spec([0.1, 0.2, 0.3, 0.4])
        state = LoopState()
        if stop_after is not None:
            state = run_epochs(spec, _Cfg(epochs=stop_after), model, opt, _data(), _data(), state=state)
        state = run_epochs(spec, _Cfg(), model, opt, _data(), _data(), state=state)
        return state, model

    whole, m1 = run(None)
    resumed, m2 = run(2)
    assert resumed.best == whole.best and len(resumed.history) == 4
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b)


def test_the_benchmarks_train_with_the_shipped_loop() -> None:
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for f in ("pwiser_bce_vs_pwiser.py", "mtorl_kuairand.py", "mtorl_online.py", "train_overhead.py"):
        text = (repo / "benchmarks" / f).read_text()
        assert "fit_in_process" in text or "run_epochs" in text, f
        assert "loss.backward()" not in text and ".backward()" not in text, f"{f} has its own loop"


@pytest.mark.parametrize("world", [2])
def test_ranks_take_disjoint_shards(world: int) -> None:
    seen = []

    class Spec(_Spec):
        def loss(self, model, batch, cfg):  # noqa: ANN001, ANN201
            seen.append(batch["i"].tolist())
            return model(batch["x"]).sum() * 0, {}

    data = {"x": np.zeros((32, 3), np.float32), "i": np.arange(32)}
    for rank in range(world):
        model = torch.nn.Linear(3, 1)
        run_epochs(Spec([0.0]), _Cfg(epochs=1, batch_size=8), model, torch.optim.SGD(model.parameters(), 0.1),
                   data, data, state=LoopState(), rank=rank, world=world)
    flat = [i for batch in seen for i in batch]
    assert sorted(flat) == list(range(32))  # every row once per epoch across the two ranks


class _StepSpec(_Spec):
    """The same update as the default path, written as a custom step (with a counting state)."""

    class State:
        def __init__(self) -> None:
            self.epochs_seen, self.val_rows = 0, 0

        def end_epoch(self, row: dict) -> None:
            self.epochs_seen += 1

        def state_dict(self) -> dict:
            return {"epochs_seen": self.epochs_seen}

        def load_state_dict(self, d: dict) -> None:
            self.epochs_seen = d["epochs_seen"]

    def step_state(self, cfg, model):  # noqa: ANN001, ANN201
        return self.State()

    def step(self, model, opt, batch, cfg, ctx):  # noqa: ANN001, ANN201
        loss, _ = self.loss(model, batch, cfg)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        for p in model.parameters():
            ctx.all_reduce(p.grad)  # SUM over ranks (identity here)
        opt.step()
        ctx.state.val_rows += len(ctx.val_batch(4)["x"])
        return {"loss": float(loss.detach())}


def test_a_custom_step_replaces_the_update_and_keeps_its_state() -> None:
    def train(spec: _Spec) -> tuple[torch.nn.Module, LoopState]:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        state = run_epochs(spec, _Cfg(), model, torch.optim.Adam(model.parameters(), 1e-2), _data(), _data(),
                           state=LoopState())
        return model, state

    plain, _ = train(_Spec([0.1, 0.2, 0.3, 0.4]))
    custom, state = train(_StepSpec([0.1, 0.2, 0.3, 0.4]))
    for a, b in zip(plain.parameters(), custom.parameters()):
        torch.testing.assert_close(a, b)  # the same update, bit for bit
    assert state.step_state.epochs_seen == 4 and state.step_state.val_rows == 4 * 8 * 4
    assert [h["train_loss"] for h in state.history][0] > [h["train_loss"] for h in state.history][-1]
