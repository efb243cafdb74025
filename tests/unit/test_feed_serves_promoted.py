"""The feed graph serves promoted versions only (``serve_apps.feed_app.resolve_stages``): a stage
without ``@serving`` refuses to deploy and says how to promote one; a version or ``@latest`` needs
the demo opt-in. No Ray: the stages are resolved from the registry before anything deploys."""

from __future__ import annotations

from pathlib import Path

import pytest

from adray.models import write_model_dir
from adray.registry import Registry
from adray.serving import ServeError
from serve_apps.feed_app import FeedArgs, resolve_stages
from workloads.drlput.config import DRLPUTConfig

OTHERS = {"ranking": "none", "bidding": "none", "allocation": "none", "channel": "none"}


@pytest.fixture()
def registry(tmp_path: Path) -> str:
    reg = Registry(tmp_path / "reg")
    for _ in range(2):  # drlput v0001, v0002 (config and meta only: resolving reads no weights)
        write_model_dir(tmp_path / "src", {}, DRLPUTConfig(), {})
        reg.publish("drlput", tmp_path / "src", {"workload": "drlput"})
    return str(tmp_path / "reg")


def test_a_stage_without_serving_refuses_to_deploy(registry: str) -> None:
    with pytest.raises(ServeError, match=r"utility stage: drlput has no @serving version.*"
                                         r"adray models promote drlput@vNNNN --force"):
        resolve_stages(FeedArgs(**OTHERS, registry=registry), registry)
    for ref in ("drlput@latest", "drlput@v0002", "drlput"):
        with pytest.raises(ServeError, match=rf"utility stage: '{ref}' is not a promoted alias"):
            resolve_stages(FeedArgs(**OTHERS, utility=ref, registry=registry), registry)


def test_serving_is_pinned_and_the_demo_opt_in_serves_latest(registry: str) -> None:
    refs, _ = resolve_stages(FeedArgs(**OTHERS, serve_unpromoted=True, registry=registry), registry)
    assert refs["utility"] == "drlput@v0002" and refs["ranking"] is None  # opt-in: the latest
    refs, _ = resolve_stages(FeedArgs(**OTHERS, utility="drlput@v0001", serve_unpromoted=True, registry=registry),
                             registry)
    assert refs["utility"] == "drlput@v0001"
    Registry(registry).set_alias("drlput", "serving", "v0001", how="forced")
    refs, _ = resolve_stages(FeedArgs(**OTHERS, registry=registry), registry)
    assert refs["utility"] == "drlput@v0001"  # @serving, pinned to its version
    refs, _ = resolve_stages(FeedArgs(**OTHERS, serve_unpromoted=True, registry=registry), registry)
    assert refs["utility"] == "drlput@v0001"  # the opt-in still prefers @serving
    with pytest.raises(ServeError, match="drlput has no @canary version"):
        resolve_stages(FeedArgs(**OTHERS, utility="drlput@canary", registry=registry), registry)
