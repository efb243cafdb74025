"""A request for more than the cluster has (or can scale to) fails at once, naming the option and the
numbers; no Ray: the cluster's resources are stubbed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adray import runtime
from adray.runtime import ResourceError, check_train_workers, cluster_size, launcher_limits

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cluster(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``set(resources, embedded=True, gcs_limits=None)``: what ``ray.cluster_resources()`` and the
    autoscaler's GCS cluster config report."""

    def set_(resources: dict[str, float], embedded: bool = True, gcs_limits: dict[str, int] | None = None) -> None:
        from ray._private.state import state

        monkeypatch.setattr(runtime.ray, "cluster_resources", lambda: dict(resources))
        monkeypatch.setattr(runtime, "_embedded", embedded)
        monkeypatch.setattr(state, "get_max_resources_from_cluster_config", lambda: gcs_limits)
        monkeypatch.delenv(runtime.AUTOSCALING_CONFIG_ENV, raising=False)
        monkeypatch.setenv("HOME", "/nonexistent-home")  # no ~/ray_bootstrap_config.yaml

    return set_


def test_64_workers_on_2_cpus_is_refused_by_name(cluster: Any) -> None:
    cluster({"CPU": 2.0, "memory": 8e9})
    with pytest.raises(ResourceError) as err:
        check_train_workers(64)
    assert str(err.value) == (
        "--workers 64: 64 Ray Train workers (one CPU each) need 64 CPUs, but the cluster has 2 CPUs "
        "(ray.cluster_resources(); no autoscaler); use --workers 2 or fewer, or a bigger cluster (--address)")
    check_train_workers(2)  # what fits passes
    with pytest.raises(ResourceError, match=r"--workers 0: expected an integer >= 1"):
        check_train_workers(0)


def test_gpu_workers_need_a_gpu_each(cluster: Any) -> None:
    cluster({"CPU": 8.0, "GPU": 1.0})
    check_train_workers(1, use_gpu=True)
    with pytest.raises(ResourceError, match=r"--workers 2: 2 Ray Train workers \(one CPU and one GPU each\) need "
                                            r"2 GPUs, but the cluster has 1 GPU .*use --workers 1 or fewer"):
        check_train_workers(2, use_gpu=True)
    cluster({"CPU": 8.0})
    with pytest.raises(ResourceError, match=r"need 1 GPU, but the cluster has 0 GPU"):
        check_train_workers(1, use_gpu=True)


def test_launcher_limits_of_the_shipped_cluster_yaml() -> None:
    # cpu_head {CPU 8} + up to 4 gpu_worker {CPU 4, GPU 1} (max_workers 4 in total)
    assert launcher_limits(REPO / "cluster.yaml") == {"CPU": 24.0, "GPU": 4.0}


def test_launcher_limits_cap_by_total_and_unknown_resources(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_workers: 3\nhead_node_type: head\navailable_node_types:\n"
                   "  head: {resources: {CPU: 2}, max_workers: 0}\n"
                   "  big: {resources: {CPU: 16}, max_workers: 2}\n"
                   "  small: {resources: {CPU: 4, GPU: 1}, max_workers: 10}\n")
    # CPU: head 2 + 2 big (32) + 1 small (4): the total max_workers 3 caps it; GPU: 3 small
    assert launcher_limits(cfg) == {"CPU": 38.0, "GPU": 3.0}
    cfg.write_text("max_workers: 3\nhead_node_type: head\navailable_node_types:\n"
                   "  head: {resources: {CPU: 2}}\n  auto: {max_workers: 3}\n")
    assert launcher_limits(cfg) == {"CPU": float("inf"), "GPU": float("inf")}  # the launcher detects them


def test_an_autoscaling_cluster_is_judged_by_its_limits(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster({"CPU": 8.0}, embedded=False)
    monkeypatch.setenv(runtime.AUTOSCALING_CONFIG_ENV, str(REPO / "cluster.yaml"))
    size = cluster_size()
    assert (size.get("CPU"), size.get("GPU"), size.autoscaling) == (24.0, 4.0, True)
    check_train_workers(4, use_gpu=True)  # GPU nodes come on demand
    with pytest.raises(ResourceError, match=r"need 5 GPUs, but the cluster has at most 4 GPUs \(the autoscaler's "
                                            r"limits in .*cluster.yaml\)"):
        check_train_workers(5, use_gpu=True)
    cluster({"CPU": 8.0}, embedded=False, gcs_limits={"CPU": 100, "GPU": 0})  # what Ray Train itself reads
    assert cluster_size().get("CPU") == 100.0 and "GCS cluster config" in cluster_size().source
    check_train_workers(64)


def test_worker_cpus_one_each_when_the_cluster_can_hold_them(cluster: Any) -> None:
    cluster({"CPU": 2.0})
    assert runtime.worker_cpus(2) == 1.0
    assert runtime.worker_cpus(2, reserve=0.5) == 0.75


def test_tune_refuses_workers_and_concurrency_before_anything_starts(cluster: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from adray import train, tune

    cluster({"CPU": 2.0})
    monkeypatch.setattr(runtime, "ensure_ray", lambda *a, **k: None)
    monkeypatch.setattr(train, "prepare_data", lambda *a, **k: pytest.fail("data made before the check"))
    space = tune.load_space(REPO / "tune_spaces" / "pwiser.yaml", "pwiser")
    with pytest.raises(ResourceError, match=r"^--workers 3: one trial's 3 Ray Train workers \(one CPU each\) need 3 "
                                            r"CPUs, but the cluster has 2 CPUs"):
        tune.run_sweep(space, trials=2, num_workers=3)
    with pytest.raises(ResourceError, match=r"^--concurrent 4: 4 trials of 1 CPUs each \(the trial 0.25 \+ 1 worker x "
                                            r"0.75\) need 4 CPUs, but the cluster has 2 CPUs .*use --concurrent 2"):
        tune.run_sweep(space, trials=4, max_concurrent=4)
    with pytest.raises(ResourceError, match=r"--trials 0: expected an integer >= 1"):
        tune.run_sweep(space, trials=0)


def test_serve_replicas_are_checked_against_the_cluster(cluster: Any) -> None:
    from ray import serve

    from adray.cli_serve import app_resources, check_app_fits

    @serve.deployment(ray_actor_options={"num_cpus": 0.25})
    class Policy:
        pass

    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    class Ingress:
        def __init__(self, policy: Any) -> None:
            pass

    app = Ingress.bind(Policy.options(num_replicas=20).bind())
    need, lines = app_resources(app, "adray")
    assert need["CPU"] == pytest.approx(5.1) and lines == ["Policy 20 x 0.25 CPU", "Ingress 1 x 0.1 CPU"]
    cluster({"CPU": 2.0})
    with pytest.raises(ResourceError, match=r"^--replicas 20 x --replica-cpus 0.25: the replicas of serve app 'adray' "
                                            r"\(Policy 20 x 0.25 CPU; Ingress 1 x 0.1 CPU\) need 5.1 CPUs, but the "
                                            r"cluster has 2 CPUs"):
        check_app_fits(app, "adray", "--replicas 20 x --replica-cpus 0.25")
    check_app_fits(Ingress.bind(Policy.options(num_replicas=2).bind()), "adray", "--replicas 2")


def _nodes(monkeypatch: pytest.MonkeyPatch, cpus: list[float]) -> None:
    nodes = [{"Alive": True, "Resources": {"CPU": c}} for c in cpus] + [{"Alive": False, "Resources": {"CPU": 8.0}}]
    monkeypatch.setattr(runtime.ray, "nodes", lambda: nodes)


def test_spread_workers_leave_one_node_a_whole_cpu_for_the_file_listing(cluster: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Data's file listing is one task of one whole CPU on one node. Two nodes of 1.5 CPUs, workers
    spread one per node: 0.5 CPU each leaves 1.0 free on each node. Two nodes of 1 CPU: any worker
    leaves less than 1 CPU on its node, so streaming is refused at once (it would wait forever)."""
    cluster({"CPU": 3.0})
    _nodes(monkeypatch, [1.5, 1.5])
    assert runtime.placed_worker_cpus(1.0, 2, "spread", reserve=1.0) == 0.5
    assert runtime.placed_worker_cpus(1.0, 2, "pack", reserve=1.0) == 1.0  # pack: as sized cluster-wide
    cluster({"CPU": 2.0})
    _nodes(monkeypatch, [1.0, 1.0])
    with pytest.raises(ResourceError, match=r"--placement strict_spread: streaming needs one node with 1 CPU free "
                                            r"beside its 1 Ray Train worker\(s\).*largest node has 1 CPUs"):
        runtime.placed_worker_cpus(0.5, 2, "strict_spread", reserve=1.0)
    assert runtime.placed_worker_cpus(1.0, 2, "strict_spread", reserve=0.0) == 1.0  # in memory: nothing to keep


def test_strict_spread_needs_a_node_per_worker(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster({"CPU": 8.0})
    _nodes(monkeypatch, [8.0])
    with pytest.raises(ResourceError, match="2 Ray Train workers need 2 nodes with CPUs, but the cluster has 1"):
        runtime.placed_worker_cpus(1.0, 2, "strict_spread")
    with pytest.raises(ResourceError, match="--placement 'ring': expected one of pack, spread, strict_spread"):
        runtime.check_placement("ring")
