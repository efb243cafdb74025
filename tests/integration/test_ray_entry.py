"""Every entry point starts or joins Ray one way (``adray.runtime``): a Ray cluster already running on
the machine, or the stale address file of a stopped one, is never joined by a local start.

The case from the issue: ``benchmarks/drlput_eval.py`` died when a cluster was up, because
``workloads/drlput/study.py`` called ``ray.init(num_cpus=1)``, which attaches to the cluster named by
Ray's address file and then refuses ``num_cpus``. Ray finds that file under ``$RAY_TMPDIR/ray``; each
test here gives its children a private one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, sys
from workloads.drlput.study import start_ray  # the benchmarks' Ray start (drlput_eval, _selection, ...)
import ray
from adray.runtime import ensure_ray, running_head_address
out = []
for case in sys.argv[1:]:
    if case == "stale":  # the cluster stops; its address file stays
        with open(os.path.join(os.environ["RAY_TMPDIR"], "ray", "ray_current_cluster"), "w") as f:
            f.write("127.0.0.1:1")
    out.append({"case": case, "head": running_head_address()})
    start_ray() if case != "ensure" else ensure_ray(num_cpus=2, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    out[-1].update(gcs=ray.get_runtime_context().gcs_address, cpus=ray.cluster_resources().get("CPU"),
                   task=ray.get(ray.remote(lambda: 41).remote()) + 1)
    ray.shutdown()
print("RESULT " + json.dumps(out))
"""


@pytest.fixture()
def short_tmpdir() -> Iterator[Path]:
    """A private $RAY_TMPDIR: Ray's socket paths live under it and must stay under ~107 characters."""
    path = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _probe(tmpdir: Path, *cases: str) -> list[dict]:
    env = os.environ | {"RAY_TMPDIR": str(tmpdir)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", PROBE, *cases], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert out.returncode == 0 and line, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return json.loads(line[-1][len("RESULT "):])


def test_a_running_cluster_is_not_joined(ray_cluster, short_tmpdir: Path) -> None:  # noqa: ANN001
    """A live cluster (this session's, named by the address file as `ray start` leaves it): the
    benchmarks' start makes its own 1-CPU Ray instead of attaching (and dying on ``num_cpus``)."""
    tmpdir = short_tmpdir
    (tmpdir / "ray").mkdir()
    session_gcs = ray_cluster.get_runtime_context().gcs_address
    (tmpdir / "ray" / "ray_current_cluster").write_text(session_gcs)
    [live] = _probe(tmpdir, "live")
    assert live["head"] == session_gcs  # the file names a running cluster ...
    assert live["gcs"] != session_gcs and live["cpus"] == 1.0 and live["task"] == 42  # ... which is not joined


@pytest.mark.slow
def test_a_stale_address_file_is_not_joined(short_tmpdir: Path) -> None:
    tmpdir = short_tmpdir
    (tmpdir / "ray").mkdir()
    [stale] = _probe(tmpdir, "stale")
    assert stale["head"] is None and stale["cpus"] == 1.0 and stale["task"] == 42


def test_a_stale_address_file_is_recognised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No Ray: the file of a stopped cluster names a port nobody listens on; the local start never
    reads it (``address="local"``), and Serve's join-the-running-cluster path ignores it."""
    import ray

    from adray import runtime

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "ray").mkdir()
    assert runtime.running_head_address() is None  # no file
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    assert runtime.running_head_address() is None  # a stale one
    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(runtime, "_embedded", False)
    runtime.ensure_ray(num_cpus=1)
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] == 1


@pytest.fixture()
def head_cluster(short_tmpdir: Path) -> Iterator[tuple[Path, str]]:
    """A `ray start --head` cluster (3 CPUs, its own RAY_TMPDIR and ports): (tmpdir, GCS address).
    Stopped by signalling its own `ray start --block` process group, never with a global `ray stop`."""
    tmpdir = short_tmpdir
    env = os.environ | {"RAY_TMPDIR": str(tmpdir)}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    ports = {f"--{k}": str(free_port()) for k in ("ray-client-server-port", "dashboard-agent-listen-port",
                                                  "metrics-export-port", "runtime-env-agent-port")}
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={port}", "--num-cpus=3",
           "--include-dashboard=false", "--disable-usage-stats", *[f"{k}={v}" for k, v in ports.items()]]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    address_file = tmpdir / "ray" / "ray_current_cluster"
    try:
        deadline = time.monotonic() + 120
        while not (address_file.is_file() and re.search(r":\d+$", address_file.read_text().strip())):
            assert proc.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(0.3)
        yield tmpdir, address_file.read_text().strip()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_drlput_eval_runs_beside_a_ray_start_cluster(head_cluster: tuple[Path, str], tmp_path: Path) -> None:
    """The issue's case end to end: a real `ray start --head` cluster up, then the benchmark (smoke
    config, one training seed); and the platform's own start (``ensure_ray``) beside it."""
    tmpdir, gcs = head_cluster
    [probe] = _probe(tmpdir, "ensure")
    assert probe["head"] == gcs and probe["gcs"] != gcs and probe["cpus"] == 2.0
    env = os.environ | {"RAY_TMPDIR": str(tmpdir), "ADRAY_HOME": str(tmp_path / "home")}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "benchmarks/drlput_eval.py", "--config", "smoke", "--train-seeds", "1",
                          "--data-root", str(tmp_path / "data"), "--json", str(tmp_path / "eval.json")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    result = json.loads((tmp_path / "eval.json").read_text().splitlines()[-1])
    assert {"reinforce", "actor_critic"} <= set(result["methods"])
