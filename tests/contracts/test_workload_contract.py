"""The workload contract, checked the same way for every workload in ``workloads.WORKLOADS``.

A workload added to the dict is covered with no new test code. Per workload, on its ``smoke``
config and the session's Ray:

1. ``test_config_is_strict``: an unknown key and a wrongly typed loop-length field are refused,
   naming the key; the config round-trips through its dict. ``test_generator_fields_are_what_
   make_data_reads``: the fields that key a ``data: generate`` dataset are all make_data reads.
2. ``test_train_publish_load_decide``: generate data, train through the platform's one entry
   (``run_training``: Ray Train or RLlib, the platform does not care), publish, load by
   reference, and decide sample requests through the serving policy: every answer validates
   against the policy's response schema and names the model version.
3. ``test_learns``: the smoke model beats the workload's trivial baseline on its own headline
   metric (``Workload.headline``) in ``Workload.evaluate``'s table.
4. ``test_eval_reproduces_training``: the ``test_*`` metrics the trainer reported (at least one:
   an empty overlap fails) are what the evaluation of the published model gives, within
   ``EVAL_TOLERANCE``.
5. ``test_http_equals_offline``: the policy served over HTTP (``adray serve``'s application)
   answers exactly what offline inference answers for the same requests.
6. ``test_gpu_twin`` (``gpu``): one smoke loop step on CUDA matches the CPU run within tolerance.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from adray.config import ConfigError, load_config
from adray.workload import Workload, get_workload, workload_names
from tests.helpers import assert_same_answer, free_port

NAMES = workload_names()
SMOKE = "smoke"
N_REQUESTS = 6


def _smoke_cfg(wl: Workload, data: Path, **overrides: Any) -> Any:
    return load_config(wl.config_cls, SMOKE, wl.configs_dir, {"data": str(data), **overrides})


@pytest.fixture()
def trained(smoke_models):  # noqa: ANN001, ANN201
    """Each workload's smoke model (tests/conftest.py: trained once per session, lazily)."""
    return smoke_models


# ----------------------------------------------------------------------------- 1. config


@pytest.mark.parametrize("name", NAMES)
def test_config_is_strict(name: str, tmp_path: Path) -> None:
    wl = get_workload(name)
    cfg = _smoke_cfg(wl, tmp_path)
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['no_such_field'\]"):
        cfg.override({"no_such_field": 1}, "--set")
    loop = wl.trainer.loop_field
    with pytest.raises(ConfigError, match=f"{loop}='many'"):
        cfg.override({loop: "many"}, "--set")
    assert wl.loop_length(cfg) >= 1
    for f in dataclasses.fields(wl.config_cls):  # typed frozen config, a docstring per field
        assert f.type is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", NAMES)
def test_generator_fields_are_what_make_data_reads(name: str, tmp_path: Path) -> None:
    """``data: generate`` datasets are keyed by ``generator_fields``: a field make_data reads but
    the list omits would let two different datasets share one key."""
    from adray.workload import GENERATE, data_dir_for, generator_key

    wl = get_workload(name)
    cfg = _smoke_cfg(wl, tmp_path / "data")
    read: set[str] = set()

    class Recording:  # the config, recording which attributes make_data reads
        def __getattr__(self, attr: str) -> Any:
            read.add(attr)
            return getattr(cfg, attr)

    wl.make_data(Recording(), tmp_path / "data")  # type: ignore[misc]
    fields = set(wl.config_cls.field_names())
    assert (read & fields) - set(wl.generator_fields) - {"seed", "data"} == set()
    gen = cfg.override({"data": GENERATE})
    other = gen.override({wl.trainer.loop_field: wl.loop_length(cfg) + 1})  # a training field
    assert data_dir_for(wl, gen) == data_dir_for(wl, other)
    assert generator_key(wl, gen) != generator_key(wl, gen.override({"seed": cfg.seed + 1}))


# ----------------------------------------------------------------------------- 2. train -> decide


@pytest.mark.ray
@pytest.mark.parametrize("name", NAMES)
def test_train_publish_load_decide(name: str, trained) -> None:  # noqa: ANN001
    from adray.registry import Registry
    from adray.serving import decide_offline, policy_meta, resolve_model

    t = trained(name)
    mv = Registry(t.registry).get(t.ref)
    assert mv.manifest["workload"] == name and mv.manifest["dataset_hash"]
    assert {"config.yaml", "meta.json"} <= set(mv.manifest["files"])
    wl, cfg, meta = policy_meta(resolve_model(t.ref, str(t.registry)), str(t.registry))
    assert cfg == t.cfg
    requests = wl.policy.sample_requests(t.cfg, t.data, N_REQUESTS, seed=1)
    assert len(requests) == N_REQUESTS
    answers = decide_offline(t.ref, requests, str(t.registry))
    response = wl.policy.response_schema(meta)
    assert len(answers) == N_REQUESTS
    for req, ans in zip(requests, answers):
        response.model_validate(ans)
        assert ans["model"] == t.ref
        assert ans.get("request_id") == req.get("request_id")
        json.dumps(ans)  # plain JSON
    bad = {**requests[0], "no_such_field": 1}
    with pytest.raises(Exception, match="no_such_field"):
        decide_offline(t.ref, [bad], str(t.registry))


# ----------------------------------------------------------------------------- 3. learning


@pytest.mark.ray
@pytest.mark.parametrize("name", NAMES)
def test_learns(name: str, trained) -> None:  # noqa: ANN001
    from adray.models import load_model
    from adray.registry import Registry

    t = trained(name)
    loaded = load_model(t.ref, Registry(t.registry))
    table = t.wl.evaluate(t.cfg, t.data, loaded.model, {})
    h = t.wl.headline
    ours, base = table[name][h.metric], table[h.baseline][h.metric]
    print(f"{name}: {h.metric} {ours:.4f} vs {h.baseline} {base:.4f} (trained in {t.train_s:.0f} s)")
    assert math.isfinite(ours) and math.isfinite(base)
    assert ours > base if h.mode == "max" else ours < base


EVAL_TOLERANCE = {"rel": 1e-6, "abs": 1e-6}
"""How close evaluation's ``test_*`` must be to training's: the same weights on the same logged rows,
so only floating-point summation order may differ (a Ray Train worker's torch threads against this
process's). Measured: equal to the last bit for every workload."""


@pytest.mark.ray
@pytest.mark.parametrize("name", NAMES)
def test_eval_reproduces_training(name: str, trained) -> None:  # noqa: ANN001
    """Every workload reports ``test_*`` metrics from training (on its test split, test logs or
    test day: metrics the logged data can give, never simulator truth) and ``Workload.evaluate``
    of the published model gives the same ones: the overlap must not be empty."""
    from adray.models import load_model
    from adray.registry import Registry

    t = trained(name)
    loaded = load_model(t.ref, Registry(t.registry))
    row = t.wl.evaluate(t.cfg, t.data, loaded.model, {})[name]
    shared = sorted(k for k in row if k.startswith("test_") and k in t.metrics)
    print(f"{name}: evaluation reproduces training on {shared}")
    assert shared, (f"{name}: no test_* metric is both in what training reported "
                    f"({sorted(k for k in t.metrics if k.startswith('test_'))}) and in the evaluation's row "
                    f"({sorted(k for k in row if k.startswith('test_'))})")
    for k in shared:
        assert row[k] == pytest.approx(t.metrics[k], **EVAL_TOLERANCE), k


# ----------------------------------------------------------------------------- 5. HTTP == offline



@pytest.mark.ray
@pytest.mark.parametrize("name", NAMES)
def test_http_equals_offline(name: str, trained) -> None:  # noqa: ANN001
    import httpx
    from ray import serve

    from adray.cli_serve import serve_up
    from adray.serving import decide_offline
    from serve_apps.app import AppArgs

    t = trained(name)
    requests = t.wl.policy.sample_requests(t.cfg, t.data, N_REQUESTS, seed=2)
    want = decide_offline(t.ref, requests, str(t.registry))
    app = f"contract-{name}"
    url = serve_up(AppArgs(model=t.ref, registry=str(t.registry)), port=free_port(), name=app,
                   route_prefix=f"/{app}")
    try:
        with httpx.Client(base_url=f"{url}/{app}", timeout=60) as client:
            info = client.get("/v1/model").json()
            assert info["model"] == t.ref and info["workload"] == name
            route = info["route"]
            for req, expected in zip(requests, want):
                r = client.post(route, json=req)
                assert r.status_code == 200, r.text
                assert_same_answer(r.json(), expected, f"{name} {req.get('request_id')}")
            r = client.post(route, json={**requests[0], "no_such_field": 1})
            assert r.status_code == 422 and "no_such_field" in r.text
            assert client.get("/openapi.json").status_code == 200
    finally:
        serve.delete(app)


# ----------------------------------------------------------------------------- 6. GPU twin


@pytest.mark.gpu
@pytest.mark.ray
@pytest.mark.parametrize("name", NAMES)
def test_gpu_twin(name: str, ray_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """One smoke loop step on CPU and on CUDA from the same seed: the decisions match within
    tolerance; samples/s of both printed (the note's CPU vs GPU figure)."""
    import torch

    from adray.serving import decide_offline
    from adray.train import run_training

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    wl = get_workload(name)
    monkeypatch.setenv("ADRAY_HOME", str(tmp_path / "home"))
    cfg = _smoke_cfg(wl, tmp_path / "data", **{wl.trainer.loop_field: 1})
    wl.make_data(cfg, tmp_path / "data")
    cpu = run_training(wl, cfg, model_name=f"{name}-cpu")
    gpu = run_training(wl, cfg, use_gpu=True, model_name=f"{name}-gpu")
    requests = wl.policy.sample_requests(cfg, tmp_path / "data", 20, seed=3)
    a = [_numbers(x) for x in decide_offline(cpu.model_ref, requests)]
    b = [_numbers(x) for x in decide_offline(gpu.model_ref, requests)]
    speed = {k: m.get("samples_per_s", m.get("train_transitions_per_s")) for k, m in
             (("cpu", cpu.metrics), ("gpu", gpu.metrics))}
    print(f"{name}: training samples/s cpu {speed['cpu']} gpu {speed['gpu']}")
    pairs = [(u, v) for x, y in zip(a, b) for u, v in zip(x, y, strict=True)]
    close = sum(abs(u - v) <= 1e-3 + 1e-3 * abs(u) for u, v in pairs)
    assert pairs and close / len(pairs) >= 0.95, f"{close}/{len(pairs)} outputs within 1e-3"


def _numbers(obj: Any) -> list[float]:
    """Every numeric leaf of an answer, in order (floats and ints: scores, probabilities, actions)."""
    if isinstance(obj, bool):
        return [float(obj)]
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [v for k in sorted(obj) for v in _numbers(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [v for item in obj for v in _numbers(item)]
    return []
