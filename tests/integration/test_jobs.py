"""Jobs and `serve deploy` against a real head started with `ray start --head` (token auth on).

The head gets free ports, its own --temp-dir and its own token file; teardown stops exactly the
processes it started (never `ray stop`, which would kill every Ray on the host). The unit tests
of adray.jobs at the bottom need no cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from adray import jobs
from adray.registry import Registry
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TOKEN = "adray-integration-test-token-0123456789abcdef"
PORT_FLAGS = ("port", "dashboard-port", "ray-client-server-port", "node-manager-port", "object-manager-port",
              "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
              "runtime-env-agent-port")



def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # 401 without a token: the server is up
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout_s}s")


@pytest.fixture(scope="module")
def head() -> Iterator[dict]:
    """A token-authenticated Ray head of its own: {"url", "env"} (env = what a client needs)."""
    tmp = Path(tempfile.mkdtemp(prefix="adrayhead", dir="/tmp"))  # short: Ray's socket paths are limited
    (tmp / "token").write_text(TOKEN)
    ports = {flag: free_port() for flag in PORT_FLAGS}
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(tmp / "token"),
               PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", f"--temp-dir={tmp / 'ray'}", "--disable-usage-stats",
           *[f"--{flag}={port}" for flag, port in ports.items()]]
    log = (tmp / "head.log").open("w")
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        _wait_http(url + "/api/version", 120)
        yield {"url": url, "tmp": tmp, "env": {"RAY_AUTH_TOKEN_PATH": str(tmp / "token")}}
    finally:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` drains and stops its own processes
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        _kill_leftovers(str(tmp))
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _kill_leftovers(marker: str) -> None:
    """Kill processes whose command line names this head's temp dir (workers that outlived it)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if marker in args and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture()
def client_env(head: dict, monkeypatch: pytest.MonkeyPatch) -> str:
    """The submitting side: only the token path, nothing else shared with the head."""
    for k, v in head["env"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    return head["url"]


@pytest.fixture(scope="module")
def trained(head: dict) -> dict:
    """`adray submit --wait -- adray train pwiser --config smoke` through the real CLI."""
    from adray.cli import app

    home = head["tmp"] / "adray_home"
    old = os.environ.get("RAY_AUTH_TOKEN_PATH")
    os.environ["RAY_AUTH_TOKEN_PATH"] = head["env"]["RAY_AUTH_TOKEN_PATH"]
    t0 = time.monotonic()
    try:
        res = CliRunner().invoke(app, ["submit", "--address", head["url"], "--wait", "--env", f"ADRAY_HOME={home}",
                                       "--", "adray", "train", "pwiser", "--config", "smoke"])
    finally:
        if old is None:
            os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        else:
            os.environ["RAY_AUTH_TOKEN_PATH"] = old
    return {"result": res, "home": home, "seconds": time.monotonic() - t0}


@pytest.mark.slow
def test_submit_train_publishes_where_the_job_wrote(trained: dict) -> None:
    res = trained["result"]
    assert res.exit_code == 0, res.output[-3000:]
    assert "submitted job raysubmit_" in res.output and "succeeded" in res.output
    reg = Registry(trained["home"] / "registry")
    mv = reg.get("pwiser@latest")
    assert mv.manifest["workload"] == "pwiser" and (reg.local_dir(mv) / "model.pt").is_file()
    assert mv.ref in res.output  # the job's streamed log names the published model


@pytest.mark.slow
def test_serve_deploy_config_on_the_cluster(head: dict, trained: dict, tmp_path: Path) -> None:
    # Ray's own `serve deploy` with our serve_config.yaml (port and registry adjusted for the test).
    assert trained["result"].exit_code == 0
    cfg = yaml.safe_load((REPO / "serve_apps" / "serve_config.yaml").read_text())
    cfg["applications"] = [a for a in cfg["applications"] if a["name"] == "adray"]  # the feed graph needs 5 models
    port = free_port()
    cfg["http_options"] = {"host": "127.0.0.1", "port": port}
    cfg["applications"][0]["args"]["registry"] = str(trained["home"] / "registry")
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, RAY_AUTH_MODE="token", **head["env"])
    serve_bin = str(VENV_BIN / "serve")
    try:
        out = subprocess.run([serve_bin, "deploy", "--address", head["url"], str(tmp_path / "serve.yaml")],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        cands = [{"ad_id": "a", "user_id": 1, "item_id": 2, "user_segment": 1, "item_category": 1, "position": 1,
                  "traffic_source": 1, "hour": 3, "device": 1}]
        feature_map = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                feature_map = httpx.get(f"http://127.0.0.1:{port}/v1/model", timeout=5).json()["meta"]["feature_map"]
                break
            except (httpx.HTTPError, KeyError, ValueError):
                time.sleep(1)
        if feature_map is None:
            st = subprocess.run([str(VENV_BIN / "serve"), "status", "--address", head["url"]], env=env,
                                capture_output=True, text=True, timeout=60)
            pytest.fail(f"serve deploy: the app never answered; serve status:\n{st.stdout}{st.stderr}")
        cands[0].update({name: 0.5 for name in feature_map["numeric"]})
        r = httpx.post(f"http://127.0.0.1:{port}/v1/rank", json={"candidates": cands}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == Registry(trained["home"] / "registry").get("pwiser@latest").ref
        assert 0 < r.json()["scores"][0]["pctcvr"] <= r.json()["scores"][0]["pctr"] < 1
    finally:
        subprocess.run([serve_bin, "shutdown", "-y", "--address", head["url"]], env=env, capture_output=True,
                       timeout=120)


@pytest.mark.slow
def test_serve_deploy_feed_app_on_the_cluster(head: dict, smoke_models, tmp_path: Path) -> None:  # noqa: ANN001
    """`serve deploy` of serve_config.yaml's `feed` application with the five smoke models: the graph
    names them, answers sampled feeds without fallbacks, names the missing field of a bad request
    and writes its decisions to the log under state_uri."""
    from adray.decision_log import read_log
    from adray.serving import policy_meta, resolve_model
    from adray.storage import Storage
    from serve_apps.feed_app import FeedArgs
    from serve_apps.feed_requests import model_sources, sample_feed_requests
    from serve_apps.feed_schema import stage_workloads

    models = {role: smoke_models(name).ref for role, (name, _) in stage_workloads().items()}
    registry = str(smoke_models("pwiser").registry)
    reg = Registry(registry)
    for ref in models.values():  # serve_config.yaml serves @serving: first versions, promoted by force (recorded)
        name, _, version = ref.partition("@")
        reg.set_alias(name, "serving", version, how="forced")
    cfg = yaml.safe_load((REPO / "serve_apps" / "serve_config.yaml").read_text())
    cfg["applications"] = [app := next(a for a in cfg["applications"] if a["name"] == "feed")]  # adray: test above
    port = free_port()
    cfg["http_options"] = {"host": "127.0.0.1", "port": port}  # a free port (8000 may be taken), loopback only
    # The smoke models' registry (@serving = the trained versions); a private state dir, so the
    # pacing ledger and the decision log start empty. replica_cpus 0.5 fits the 2-CPU head as it is.
    app["args"].update(registry=registry, state_uri=str(tmp_path / "state"))
    args = FeedArgs(**app["args"])
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, RAY_AUTH_MODE="token", **head["env"])
    serve_bin, url = str(VENV_BIN / "serve"), f"http://127.0.0.1:{port}{app['route_prefix']}"

    def graph() -> dict:
        r = httpx.get(f"{url}/v1/graph", timeout=10)
        r.raise_for_status()
        return r.json()

    try:
        out = subprocess.run([serve_bin, "deploy", "--address", head["url"], str(tmp_path / "serve.yaml")],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        info, deadline = None, time.monotonic() + 180
        while info is None and time.monotonic() < deadline:
            try:
                info = graph()
            except httpx.HTTPError:
                time.sleep(1)
        if info is None:
            st = subprocess.run([serve_bin, "status", "--address", head["url"]], env=env, capture_output=True,
                                text=True, timeout=60)
            pytest.fail(f"serve deploy: the feed app never answered; serve status:\n{st.stdout}{st.stderr}")
        assert info["models"] == models and info["mode"] == args.mode

        requests = sample_feed_requests(model_sources(models, registry), 3, n_ads=30, n_organic=10, n_advertisers=6)
        window = policy_meta(resolve_model(models["allocation"], registry), registry)[2]["obs_layout"]["window"]
        for req in requests:
            r = httpx.post(f"{url}/v1/feed", json=req, timeout=60)
            assert r.status_code == 200, r.text
            assert r.json()["fallbacks"] == {} and len(r.json()["feed"]) == window, r.json()
        bad = {**requests[0], "user": {k: v for k, v in requests[0]["user"].items() if k != "user_id"}}
        r = httpx.post(f"{url}/v1/feed", json=bad, timeout=60)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "user", "user_id"], r.text

        deadline = time.monotonic() + 30
        while (logged := graph()["decision_log"])["flushed"] < len(requests) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert logged["flushed"] == len(requests) and logged["dropped"] == 0, logged
        table = read_log(Storage(args.state_uri), args.log_stream)
        assert sorted(table.column("request_id").to_pylist()) == sorted(r["request_id"] for r in requests)
    finally:
        subprocess.run([serve_bin, "shutdown", "-y", "--address", head["url"]], env=env, capture_output=True,
                       timeout=120)


@pytest.mark.slow
def test_failing_job_exit_status_logs_list_and_stop(client_env: str) -> None:
    from adray.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["submit", "--address", client_env, "--wait", "--",
                              "python", "-c", "print('to stdout'); import sys; sys.exit(3)"])
    assert res.exit_code == 3 and "to stdout" in res.output and "exit status 3" in res.output
    job_id = res.output.split("submitted job ")[1].split()[0]
    assert "to stdout" in runner.invoke(app, ["jobs", "logs", job_id, "--address", client_env]).output
    listed = runner.invoke(app, ["jobs", "list", "--address", client_env]).output
    assert f"{job_id}  FAILED" in listed and "exit=3" in listed

    sleeper = jobs.submit(["sleep", "120"], address=client_env)
    deadline = time.monotonic() + 60
    while jobs.list_jobs(client_env)[0]["status"] != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "stop requested" in runner.invoke(app, ["jobs", "stop", sleeper, "--address", client_env]).output
    assert jobs.wait(sleeper, client_env, timeout_s=60) == 1
    assert {r["id"]: r["status"] for r in jobs.list_jobs(client_env)}[sleeper] == "STOPPED"


@pytest.mark.slow
def test_wrong_token_is_refused(head: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    with pytest.raises(Exception, match="(?i)authenticat|401|403"):
        jobs.list_jobs(head["url"])


# --------------------------------------------------------------------------- no cluster needed


def test_parse_env_and_address_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    assert jobs.parse_env(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(jobs.JobError, match="--env 'oops': expected KEY=VALUE"):
        jobs.parse_env(["oops"])
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert jobs.resolve_address(None) == "http://127.0.0.1:8265"
    assert jobs.resolve_address("http://head:8265/") == "http://head:8265"
    with pytest.raises(jobs.JobError, match="dashboard URL"):
        jobs.resolve_address("head:6379")
    with pytest.raises(jobs.JobError, match="nothing to submit"):
        jobs.submit([], address="http://127.0.0.1:1")


def test_address_wins_over_ray_address(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray's JobSubmissionClient lets RAY_ADDRESS override the address it is given; ours must not.
    port = free_port()  # nothing listens there
    monkeypatch.setenv("RAY_ADDRESS", "http://localhost:1")
    with pytest.raises(jobs.JobError) as err:
        jobs.client(f"http://127.0.0.1:{port}")
    assert f"127.0.0.1:{port}" in str(err.value) and "localhost:1" not in str(err.value), str(err.value)
    assert os.environ["RAY_ADDRESS"] == "http://localhost:1"  # restored for whoever reads it next


def test_auth_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(k, raising=False)
    assert jobs.auth_headers() == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("home-token\n")
    assert jobs.auth_headers() == {"Authorization": "Bearer home-token"}
    (tmp_path / "t").write_text("file-token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert jobs.auth_token() == "file-token"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env-token")
    assert jobs.auth_token() == "env-token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert jobs.auth_headers() == {}


def test_exit_status() -> None:
    assert jobs.exit_status("SUCCEEDED", None) == 0
    assert jobs.exit_status("FAILED", 3) == 3
    assert jobs.exit_status("FAILED", None) == 1
    assert jobs.exit_status("STOPPED", None) == 1


def test_runtime_env_ships_the_project_not_the_venv() -> None:
    env = jobs.runtime_env(env_vars={"ADRAY_HOME": "/x"})
    assert Path(env["working_dir"]) == REPO and (REPO / "pyproject.toml").is_file()
    assert ".venv" in env["excludes"] and env["env_vars"] == {"ADRAY_HOME": "/x"}
