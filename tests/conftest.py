"""Shared fixtures: one local Ray per test session; a private ADRAY_HOME per test."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"


@pytest.fixture(scope="session")
def ray_cluster():
    """The one Ray cluster of the test session (2 CPUs, like CI)."""
    import ray

    from adray.runtime import ensure_ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ensure_ray(num_cpus=2)
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    except Exception:
        pass
    ray.shutdown()


@pytest.fixture()
def adray_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ADRAY_HOME (registry, runs) for one test."""
    home = tmp_path / "adray_home"
    monkeypatch.setenv("ADRAY_HOME", str(home))
    monkeypatch.delenv("ADRAY_REGISTRY", raising=False)
    return home


@pytest.fixture(scope="session")
def samples() -> Path:
    """The real data samples kept in the repository (data/samples/README.md)."""
    return SAMPLES


@dataclasses.dataclass
class Trained:
    """A workload's smoke model: trained on its generated smoke data, published in ``registry``."""

    wl: Any
    cfg: Any
    data: Path
    registry: Path
    ref: str
    metrics: dict[str, float]
    train_s: float


@pytest.fixture(scope="session")
def smoke_models(ray_cluster, tmp_path_factory):  # noqa: ANN001, ANN201
    """``get(name) -> Trained``: each workload's ``smoke`` model, trained through the platform's one
    entry (``run_training``) once per session when first asked for, all published in one registry
    (the contract suite and the feed graph use the same models)."""
    from adray.config import load_config
    from adray.train import run_training
    from adray.workload import get_workload

    cache: dict[str, Trained] = {}
    home = tmp_path_factory.mktemp("smoke_models")

    def get(name: str) -> Trained:
        if name not in cache:
            wl = get_workload(name)
            data = home / "data" / name
            cfg = load_config(wl.config_cls, "smoke", wl.configs_dir, {"data": str(data)})
            assert wl.make_data is not None, f"{name}: the contract suite needs a generator for its smoke data"
            wl.make_data(cfg, data)
            old = {k: os.environ.get(k) for k in ("ADRAY_HOME", "ADRAY_STORAGE", "ADRAY_REGISTRY")}
            os.environ["ADRAY_HOME"] = str(home)
            os.environ.pop("ADRAY_STORAGE", None)
            os.environ.pop("ADRAY_REGISTRY", None)
            try:
                t0 = time.perf_counter()
                out = run_training(wl, cfg, num_workers=1)
                train_s = time.perf_counter() - t0
            finally:
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            assert out.model_ref == f"{name}@v0001"
            cache[name] = Trained(wl, cfg, data, home / "registry", out.model_ref, out.metrics, train_s)
        return cache[name]

    return get


S3_CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
"""Credentials the moto S3 server accepts (set them with monkeypatch in the test)."""


@pytest.fixture(scope="session")
def s3_server():  # noqa: ANN201
    """``host:port`` of a real S3-compatible server (moto_server, a dev dependency) for the session."""
    import httpx

    exe = Path(sys.executable).with_name("moto_server")
    if not exe.is_file():
        pytest.fail(f"{exe} missing: moto[server] is a dev dependency (pip install -e '.[dev]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto server did not start")
            time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    proc.kill()
    proc.wait()
