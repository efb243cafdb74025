"""The composed feed graph over HTTP with the five workloads' smoke models (tests/conftest.py).

One graph, deployed fused (all stages in the ingress replica) and split (a deployment per stage;
a ``slow`` test): both answer the same feeds; every stage is named with its model version; bad requests are 422s
naming the field; auto-bidding spend never exceeds a budget; every decision reaches the Parquet
decision log with DRL-PUT's log columns; a model of the wrong kind for a stage is refused before
anything is deployed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from serve_apps.feed_schema import ROLES
from tests.helpers import free_port

STAGE_WORKLOADS = {"ranking": "pwiser", "bidding": "vamo", "utility": "drlput", "allocation": "crossdqn",
                   "channel": "mtorl"}



@pytest.fixture(scope="module")
def five(smoke_models) -> dict[str, Any]:  # noqa: ANN001
    return {role: smoke_models(name) for role, name in STAGE_WORKLOADS.items()}


def _requests(five: dict[str, Any], n: int, budget: float, seed: int = 0) -> list[dict[str, Any]]:
    from serve_apps.feed_requests import sample_feed_requests

    sources = {role: (t.wl.policy, t.cfg, t.data) for role, t in five.items()}
    return sample_feed_requests(sources, n, n_ads=30, n_organic=10, n_advertisers=6, budget=budget, seed=seed)


def _args(five: dict[str, Any], state: Path, **kw: Any) -> Any:
    from serve_apps.feed_app import FeedArgs

    refs = {role: t.ref for role, t in five.items()}  # versions, not aliases: the demo opt-in
    return FeedArgs(**refs, registry=str(five["ranking"].registry), state_uri=str(state), log_flush_s=0.2,
                    replica_cpus=0.25, stage_cpus=0.1, serve_unpromoted=True, **kw)


def _answers(five: dict[str, Any], tmp_path: Path, mode: str, requests: list[dict[str, Any]],
             budget: float) -> list[dict[str, Any]]:
    """Deploy the graph in ``mode``, post ``requests`` and check what every mode must do (models,
    422s naming the field, /docs, the decision log, the ledger within budget); its answers."""
    import httpx
    import ray
    from ray import serve

    from adray.cli_serve import serve_graph
    from adray.decision_log import read_log
    from adray.storage import Storage
    from serve_apps.feed_schema import FeedResponse

    app = f"feed-{mode}"
    state = tmp_path / mode
    url = serve_graph(_args(five, state, mode=mode, ledger_name=f"pacing-test-{mode}"), port=free_port(), name=app,
                      route_prefix=f"/{app}")
    answers = []
    try:
        with httpx.Client(base_url=f"{url}/{app}", timeout=120) as client:
            info = client.get("/v1/graph").json()
            assert info["models"] == {role: t.ref for role, t in five.items()} and info["mode"] == mode
            for req in requests:
                r = client.post("/v1/feed", json=req)
                assert r.status_code == 200, r.text
                answers.append(FeedResponse.model_validate(r.json()).model_dump())
            bad = {**requests[0], "user": {**requests[0]["user"], "utility_state": {
                k: v for k, v in requests[0]["user"]["utility_state"].items() if k != "hour"}}}
            r = client.post("/v1/feed", json=bad)
            assert r.status_code == 422 and ["body", "user", "utility_state", "hour"] == r.json()["detail"][0]["loc"]
            short = {**requests[0], "organic": [{**requests[0]["organic"][0], "content": [0.0]}]}
            r = client.post("/v1/feed", json=short)
            assert r.status_code == 422 and "item_dim" in r.text, r.text
            assert client.get("/docs").status_code == 200
            time.sleep(0.6)  # two flush periods
            logged = client.get("/v1/graph").json()["decision_log"]
            assert logged["appended"] == len(requests) and logged["dropped"] == 0, logged
        ledger = ray.get_actor(f"pacing-test-{mode}", namespace="adray")
        specs = [{"advertiser": a["advertiser"], **a["auto"]} for a in requests[0]["ads"] if a["campaign"] == "auto"]
        views = ray.get(ledger.views.remote(specs))
        assert views and all(v["spent"] <= budget + 1e-12 for v in views.values()), views
    finally:
        serve.delete(app)
        try:
            ray.kill(ray.get_actor(f"pacing-test-{mode}", namespace="adray"), no_restart=True)
        except ValueError:
            pass
    table = read_log(Storage(str(state)), "decisions/feed")
    assert sorted(table.column("request_id").to_pylist()) == sorted(r["request_id"] for r in requests)
    assert set(table.column("policy_id").to_pylist()) == {five["utility"].ref}
    return answers


@pytest.mark.ray
def test_feed_graph_fused(five: dict[str, Any], tmp_path: Path) -> None:
    budget = 0.05
    fused = _answers(five, tmp_path, "fused", _requests(five, 8, budget), budget)
    for answer in fused:
        assert answer["models"] == {role: t.ref for role, t in five.items()} and answer["fallbacks"] == {}
        for s in answer["feed"]:
            if s["kind"] == "ad":
                assert s["price"] >= answer["utility"]["reserve"] - 1e-9
    assert [s for a in fused for s in a["feed"] if s["kind"] == "ad"], "no ad was shown in 8 feeds"
    assert set(ROLES) == set(fused[0]["models"])


@pytest.mark.slow  # ~35 s: five stage deployments more; the default run keeps the fused graph
@pytest.mark.ray
def test_feed_graph_split_answers_as_fused(five: dict[str, Any], tmp_path: Path) -> None:
    budget = 0.05
    requests = _requests(five, 8, budget)
    fused = _answers(five, tmp_path, "fused", requests, budget)
    split = _answers(five, tmp_path, "split", requests, budget)
    for f, s in zip(fused, split, strict=True):
        assert f["fallbacks"] == {} == s["fallbacks"], (f["fallbacks"], s["fallbacks"])
        assert [x["id"] for x in f["feed"]] == [x["id"] for x in s["feed"]]
        assert f["decisions"] == s["decisions"]


def test_a_stage_given_a_model_of_another_kind_is_refused(five: dict[str, Any], tmp_path: Path) -> None:
    from adray.serving import ServeError
    from serve_apps.feed_app import build_feed_app

    with pytest.raises(ServeError, match=r"ranking stage: mtorl@v0001 is a mtorl model answering /v1/channel"):
        build_feed_app(_args(five, tmp_path).model_copy(update={"ranking": five["channel"].ref}))
    with pytest.raises(ServeError, match=r"bidding stage: .*vamo@v0042"):
        build_feed_app(_args(five, tmp_path).model_copy(update={"bidding": "vamo@v0042"}))


@pytest.mark.slow
@pytest.mark.ray
def test_a_stage_replica_killed_under_load_fails_no_request(five: dict[str, Any], tmp_path: Path) -> None:
    """Split graph, 2 ranking replicas, steady load; one replica killed: every request is answered
    (the ranking stage falls back while its calls to the dead replica fail) and Serve restores it."""
    import asyncio
    import importlib.util

    from ray import serve

    from adray.cli_serve import serve_graph
    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("graph_faults", REPO / "benchmarks" / "graph_faults.py")
    faults = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(faults)  # type: ignore[union-attr]
    app = "feed-kill"
    url = serve_graph(_args(five, tmp_path, mode="split", stage_replicas=2, ledger_name="pacing-test-kill"),
                      port=free_port(), name=app, route_prefix=f"/{app}")
    try:
        out = asyncio.run(faults.run(f"{url}/{app}", _requests(five, 16, 1e9), rps=4.0, seconds=20.0, kill_at=6.0,
                                     app=app, deployment="stage-ranking", stage="ranking", want=2))
    finally:
        serve.delete(app)
        import ray

        ray.kill(ray.get_actor("pacing-test-kill", namespace="adray"), no_restart=True)
    print(out)
    assert out["errors"] == 0, out
    assert out["recovery_s"] == out["recovery_s"] and out["recovery_s"] < 60, out  # not NaN


@pytest.mark.ray
def test_serve_graph_shed_port_sheds_in_haproxy_and_serve_down_stops_it(five: dict[str, Any], tmp_path: Path) -> None:
    """`adray serve graph --shed-port` (issue 23): the shedding HAProxy runs as a detached actor in
    front of the graph's replica, forwards what the replica can take and answers the rest itself
    (503, Retry-After, shed: overload; the replica's own admission says something else); `adray
    serve down` stops it and frees its port."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import ray
    from typer.testing import CliRunner

    from adray.cli import app as cli
    from adray.cli_serve import SHED_ACTOR
    from adray.shed_proxy import shed_answer

    name, port = "feed-shed", free_port()
    refs = [x for role, t in five.items() for x in (f"--{role}", t.ref)]
    run = CliRunner().invoke(cli, ["serve", "graph", "--unpromoted", *refs, "--registry", str(five["ranking"].registry),
                                   "--state-uri", str(tmp_path / "state"), "--name", name, "--route-prefix", f"/{name}",
                                   "--replicas", "1", "--shed-port", str(port), "--shed-per-replica", "1",
                                   "--shed-queue-ms", "5"])
    try:
        assert run.exit_code == 0, run.output
        assert f":{port}/{name}/v1/feed" in run.output and "niceness" in run.output, run.output
        info = ray.get(ray.get_actor(SHED_ACTOR.format(app=name), namespace="adray").info.remote(), timeout=30)
        assert info["port"] == port and len(info["servers"]) == 1 and info["per_replica"] == 1, info

        url = f"http://127.0.0.1:{port}/{name}/v1/feed"
        requests = _requests(five, 12, 50.0)
        r = httpx.post(url, json=requests[0], timeout=60)
        assert r.status_code == 200 and r.json()["models"] == {role: t.ref for role, t in five.items()}, r.text
        # the agent (on by default): the actor finds the replica's agent port (under the route prefix)
        # and HAProxy asks it the replica's limit (<= max_in_flight 8) instead of --shed-per-replica 1
        actor = ray.get_actor(SHED_ACTOR.format(app=name), namespace="adray")
        t0 = time.monotonic()
        while not (info := ray.get(actor.info.remote(), timeout=30))["agents"] and time.monotonic() - t0 < 20:
            time.sleep(0.5)
        assert list(info["agents"]) == info["servers"] and info["agent_inter_ms"] == 20, info

        def post(req: dict[str, Any]) -> httpx.Response:
            return httpx.post(url, json=req, timeout=60)

        with ThreadPoolExecutor(12) as pool:  # 12 at once, at most 8 reach the replica, the rest wait 5 ms
            out = list(pool.map(post, requests))
        shed = [r for r in out if r.status_code == 503]
        assert {r.status_code for r in out} <= {200, 503} and any(r.status_code == 200 for r in out)
        proxy_says = json.loads(shed_answer().split(b"\r\n\r\n", 1)[1])["detail"]
        assert any(r.json() == {"detail": proxy_says, "shed": "overload"} and r.headers["retry-after"] == "1"
                   for r in shed), [(r.status_code, r.text[:120]) for r in out]
    finally:
        down = CliRunner().invoke(cli, ["serve", "down", "--name", name])
    assert down.exit_code == 0, down.output
    with pytest.raises(ValueError):
        ray.get_actor(SHED_ACTOR.format(app=name), namespace="adray")
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there any more
