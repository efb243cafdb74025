"""Shared fixtures: one local Ray per test session; a private ADRAY_HOME per test."""

from __future__ import annotations

import os
from pathlib import Path

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
