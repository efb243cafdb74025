"""Fuzz of ``POST /v1/feed`` over real HTTP (issue 20): the fused graph of the five workloads'
smoke models on the session's Serve, fed realistic requests (``sample_feed_requests``) mutated as
the in-process fuzz does (tests/unit/test_feed_fuzz.py, many more examples there). No answer is a
5xx; a 422 names each field under ``body``; a 200 is valid JSON (no NaN/Infinity) with every
number finite; every answered request reaches the decision log, whose rows hold no non-finite
number; and a clean request sent after the fuzz still gets every model.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import free_port
from tests.unit import feed_world as W

STAGE_WORKLOADS = {"ranking": "pwiser", "bidding": "vamo", "utility": "drlput", "allocation": "crossdqn",
                   "channel": "mtorl"}
EXAMPLES = 60


@pytest.mark.ray
@pytest.mark.slow  # 124 s in the full suite (deploys the fused graph); the in-process fuzz stays in the default run
def test_feed_fuzz_over_http_has_no_5xx_and_no_non_finite_number(smoke_models, tmp_path: Path) -> None:  # noqa: ANN001
    import httpx
    import ray
    from ray import serve

    from adray.cli_serve import serve_graph
    from adray.decision_log import read_log
    from adray.storage import Storage
    from serve_apps.feed_app import FeedArgs
    from serve_apps.feed_requests import sample_feed_requests

    five = {role: smoke_models(name) for role, name in STAGE_WORKLOADS.items()}
    sources = {role: (t.wl.policy, t.cfg, t.data) for role, t in five.items()}
    base = sample_feed_requests(sources, 4, n_ads=8, n_organic=4, n_advertisers=4, budget=5.0, seed=3)
    args = FeedArgs(**{role: t.ref for role, t in five.items()}, registry=str(five["ranking"].registry),
                    state_uri=str(tmp_path), log_flush_s=0.2, replica_cpus=0.25, serve_unpromoted=True,
                    ledger_name="pacing-test-fuzz", stage_timeout_s=5.0)
    app = "feed-fuzz"
    t0 = time.perf_counter()
    url = serve_graph(args, port=free_port(), name=app, route_prefix=f"/{app}")
    deploy_s = time.perf_counter() - t0
    codes: dict[int, int] = {}
    answered: list[str] = []
    try:
        with httpx.Client(base_url=f"{url}/{app}", timeout=60) as client:

            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
            @given(st.data())
            def post(data: st.DataObject) -> None:
                body = json.loads(json.dumps(base[data.draw(st.integers(0, len(base) - 1))]))
                body["request_id"] = f"fuzz-{data.draw(st.integers(0, 9999)):04d}"  # one length: the draws replay
                raw = W.mutated(data.draw, body)
                r = client.post("/v1/feed", content=raw, headers={"content-type": "application/json"})
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                assert r.status_code in (200, 422), (r.status_code, r.text[:500])
                answer = json.loads(r.text, parse_constant=lambda c: pytest.fail(f"{c} in the answer: {r.text[:300]}"))
                if r.status_code == 422:
                    assert all(d["loc"][0] == "body" and d["msg"] for d in answer["detail"]), answer
                elif r.status_code == 200:
                    assert W.finite(answer), answer
                    answered.append(answer["request_id"])

            t0 = time.perf_counter()
            post()
            fuzz_s = time.perf_counter() - t0
            clean = client.post("/v1/feed", json={**base[0], "request_id": "after-fuzz"})
            assert clean.status_code == 200, clean.text
            assert set(clean.json()["fallbacks"]) <= {"channel"}, clean.json()["fallbacks"]  # its journey may be null
            answered.append("after-fuzz")
            time.sleep(0.6)  # two flush periods
            graph = client.get("/v1/graph").json()
            assert graph["decision_log"]["appended"] == len(answered), graph["decision_log"]
            assert graph["counters"]["nonfinite_repaired"] == 0, graph["counters"]
    finally:
        serve.delete(app)
        try:
            ray.kill(ray.get_actor("pacing-test-fuzz", namespace="adray"), no_restart=True)
        except ValueError:
            pass
    print(f"feed fuzz over HTTP: {sum(codes.values())} bodies in {fuzz_s:.1f} s (deploy {deploy_s:.1f} s), "
          f"status codes {codes}")
    table = read_log(Storage(str(tmp_path)), "decisions/feed")
    assert sorted(table.column("request_id").to_pylist()) == sorted(answered)
    for row in table.to_pylist():
        bad = [k for k, v in row.items() if not W.finite(v)]
        assert not bad, (bad, row["request_id"])
    assert codes.get(200, 0) > 1 and codes.get(422, 0) > 0
    assert all(not isinstance(v, float) or math.isfinite(v) for v in table.column("latency_ms").to_pylist())
