"""Helpers for tests that drive the real `adray` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def adray(*args: str, home: Path, ray_address: str | None = None, timeout: int = 600,
          check: bool = False, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m adray.cli ARGS` as a user would, with a private ADRAY_HOME."""
    env = os.environ | {"ADRAY_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("ADRAY_REGISTRY", None)
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    else:
        env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", "adray.cli", *args], cwd=cwd or REPO, env=env,
                         capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"adray {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def publish_tiny(root: Path, seed: int, model: str, feature_map) -> object:  # noqa: ANN001
    """A small pwiser network (random weights) published as the registry does after training."""
    import torch

    from adray.models import write_model_dir
    from adray.registry import Registry
    from adray.workload import get_workload

    wl = get_workload("pwiser")
    cfg = wl.config_cls(model=model, embedding_dim=4, expert_units=(8,), tower_units=(8,), bottom_units=(8,),
                        dnn_units=(8,), num_experts=2, num_specific_experts=1)
    meta = {"feature_map": feature_map.to_dict()}
    torch.manual_seed(seed)
    net = wl.trainer.spec.build_model(cfg, meta)
    out = root.parent / f".tiny-{model}-{seed}"
    write_model_dir(out, {"model.pt": net.state_dict()}, cfg, meta)
    return Registry(root).publish("pwiser", out, {"workload": "pwiser", "config": cfg.to_dict(), "metrics": {}})


def assert_same_answer(got: object, want: object, path: str = "answer", rel: float = 1e-5) -> None:
    """An HTTP answer equals the offline one: every key, string, int, bool and list length exactly,
    floats to float32 rounding (``rel``). Bit-equality does not hold across processes: a Serve
    replica runs torch on one thread (Ray sets OMP_NUM_THREADS=1 for a 1-CPU actor), the test
    process on all cores, and the kernels reduce in a different order (measured on CI: relative
    differences of 1e-7 .. 3e-7 in pwiser, mtorl and vamo answers)."""
    import math

    if isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, (int, float)) and isinstance(want, (int, float)), f"{path}: {got!r} != {want!r}"
        assert math.isclose(got, want, rel_tol=rel, abs_tol=1e-9), f"{path}: {got!r} != {want!r}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{path}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            assert_same_answer(got[k], want[k], f"{path}.{k}", rel)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_answer(g, w, f"{path}[{i}]", rel)
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def crossdqn_module(cfg: Any, beta: float | None = None) -> Any:
    """An untrained, inference-only Cross DQN RLModule of ``cfg`` with seeded weights (type
    embeddings drawn so that actions differ); ``beta`` sets the served PAE offset (Q - β·PAE)."""
    import gymnasium as gym
    import numpy as np
    import torch

    from workloads.crossdqn.model import CrossDQNModule
    from workloads.crossdqn.train import model_meta

    meta = model_meta(cfg)
    torch.manual_seed(0)
    layout = meta["obs_layout"]
    mod = CrossDQNModule(observation_space=gym.spaces.Box(-np.inf, np.inf, (layout["obs_dim"],), np.float32),
                         action_space=gym.spaces.Discrete(cfg.num_actions), inference_only=True,
                         model_config=meta["module_config"])
    with torch.no_grad():
        if beta is not None:
            mod.net.pae_offset.fill_(beta)
        mod.net.type_emb.normal_()
    return mod.eval()
