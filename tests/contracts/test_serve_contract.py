"""The ranking policy on Serve: exactly the network's predictions, micro-batched; bad requests;
rolling a new version under load. (Every workload's HTTP == offline contract is in
test_workload_contract.py; this file covers what the ranking request adds: candidate lists,
limits, OpenAPI from the FeatureMap, and rolling versions.)

Runs the real application (FastAPI ingress -> batched policy deployment) on the session Ray and
talks to it over HTTP.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from adray.data.features import CategoricalFeature, FeatureMap
from adray.models import build_from_dir
from adray.registry import ModelVersion, Registry
from adray.workload import get_workload
from tests.helpers import free_port
from tests.helpers import publish_tiny as _publish_tiny

pytestmark = pytest.mark.ray

FM = FeatureMap(
    (CategoricalFeature("user_id", 50), CategoricalFeature("item_id", 30), CategoricalFeature("position", 6)),
    ("price", "ctx_score"),
    ("click", "conversion"),
)


def publish_tiny(root: Path, seed: int, model: str) -> ModelVersion:
    return _publish_tiny(root, seed, model, FM)


def candidates(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"ad_id": f"ad{i}", "user_id": int(rng.integers(0, 60)),  # ids >= 50 are out of vocabulary
         "item_id": int(rng.integers(0, 30)), "position": int(rng.integers(0, 6)),
         "price": float(rng.normal()), "ctx_score": float(rng.random())}
        for i in range(n)
    ]


def offline(mv: ModelVersion, root: Path, cands: list[dict]) -> dict[str, np.ndarray]:
    """Offline prediction straight from the checkpoint: FeatureMap.arrays -> model (no Serve code)."""
    model, _, meta = build_from_dir(Registry(root).local_dir(mv), get_workload("pwiser"))
    arrays = FeatureMap.from_dict(meta["feature_map"]).arrays(pd.DataFrame(cands), "offline", with_labels=False)
    with torch.no_grad():
        out = model(torch.from_numpy(arrays["x_cat"]), torch.from_numpy(arrays["x_num"]))
    return {k: v.numpy() for k, v in out.items()}



@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):  # noqa: ANN001, ANN201
    from ray import serve

    from adray.cli_serve import serve_up
    from serve_apps.app import AppArgs

    root = tmp_path_factory.mktemp("registry")
    v1, v2 = publish_tiny(root, 0, "ple"), publish_tiny(root, 1, "dnn")

    current: dict[str, str] = {}

    def up(ref: str) -> str:  # (re)deploy only when the served version differs
        if current.get("ref") != ref:
            current["url"] = serve_up(
                AppArgs(model=ref, registry=str(root), max_candidates=100, max_body_bytes=64_000),
                port=free_port(),
            )
            current["ref"] = ref
        return current["url"]

    url = up(v1.ref)
    with httpx.Client(base_url=url, timeout=30) as client:
        yield {"url": url, "root": root, "v1": v1, "v2": v2, "up": up, "client": client}
    serve.delete("adray")


def test_http_scores_equal_offline_prediction_exactly(served) -> None:  # noqa: ANN001
    served["up"](served["v1"].ref)
    cands = candidates(40, seed=1)
    r = served["client"].post("/v1/rank", json={"request_id": "r1", "candidates": cands})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == served["v1"].ref and body["request_id"] == "r1"
    assert [s["ad_id"] for s in body["scores"]] == [c["ad_id"] for c in cands]
    want = offline(served["v1"], served["root"], cands)
    for key, task in (("pctr", "ctr"), ("pcvr", "cvr"), ("pctcvr", "ctcvr")):
        got = np.array([s[key] for s in body["scores"]], dtype=np.float32)
        np.testing.assert_array_equal(got, want[task])


def test_batched_concurrent_requests_equal_offline(served) -> None:  # noqa: ANN001
    # Concurrent requests are micro-batched into one forward pass; each answer must still be exact.
    served["up"](served["v1"].ref)
    requests = [candidates(5 + 7 * i, seed=10 + i) for i in range(8)]
    results: dict[int, dict] = {}

    def send(i: int) -> None:
        results[i] = httpx.post(served["url"] + "/v1/rank", json={"candidates": requests[i]}, timeout=30).json()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for i, cands in enumerate(requests):
        got = np.array([s["pctcvr"] for s in results[i]["scores"]], dtype=np.float32)
        np.testing.assert_array_equal(got, offline(served["v1"], served["root"], cands)["ctcvr"])


def test_bad_requests(served) -> None:  # noqa: ANN001
    c = served["client"]
    bad = candidates(3)
    del bad[1]["price"]
    bad[2]["user_id"] = "abc"
    r = c.post("/v1/rank", json={"candidates": bad})
    assert r.status_code == 422
    locs = [e["loc"] for e in r.json()["detail"]]
    assert ["body", "candidates", 1, "price"] in locs and ["body", "candidates", 2, "user_id"] in locs

    r = c.post("/v1/rank", json={"cands": []})
    assert r.status_code == 422 and ["body", "candidates"] in [e["loc"] for e in r.json()["detail"]]

    r = c.post("/v1/rank", json={"request_id": "e", "candidates": []})
    assert r.status_code == 200 and r.json()["scores"] == [] and r.json()["request_id"] == "e"

    r = c.post("/v1/rank", json={"candidates": candidates(101)})
    assert r.status_code == 422 and "at most 100" in r.text

    r = c.post("/v1/rank", content=b'{"candidates": []' + b" " * 70_000 + b"}",
               headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit of 64000 bytes" in r.text

    assert c.get("/openapi.json").json()["components"]["schemas"]["Candidate"]["required"] == [
        "ad_id", "user_id", "item_id", "position", "price", "ctx_score"]
    assert c.get("/docs").status_code == 200


def test_unknown_version_fails_before_deploying(served) -> None:  # noqa: ANN001
    from ray import serve

    from adray.cli_serve import serve_app

    served["up"](served["v1"].ref)
    before = serve.status().applications["adray"].last_deployed_time_s
    res = CliRunner().invoke(serve_app, ["up", "--model", "pwiser@v0042", "--registry", str(served["root"])])
    assert res.exit_code == 2
    assert "v0042" in res.output and "'v0001', 'v0002'" in res.output
    assert serve.status().applications["adray"].last_deployed_time_s == before


def test_rolling_a_new_version_under_load_has_no_errors(served) -> None:  # noqa: ANN001
    from adray.cli_serve import serve_app

    served["up"](served["v1"].ref)
    seen: Counter = Counter()
    errors: list[str] = []
    stop = threading.Event()

    def load() -> None:  # a steady ~20 requests/s while the version rolls
        with httpx.Client(base_url=served["url"], timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/rank", json={"candidates": candidates(20)})
                    if r.status_code == 200:
                        seen[r.json()["model"]] += 1
                    else:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                time.sleep(0.05)

    threads = [threading.Thread(target=load) for _ in range(2)]
    [t.start() for t in threads]
    time.sleep(1.0)
    res = CliRunner().invoke(serve_app, ["up", "--model", served["v2"].ref, "--registry", str(served["root"])])
    assert res.exit_code == 0, res.output
    deadline = time.monotonic() + 30
    while seen[served["v2"].ref] < 10 and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    [t.join() for t in threads]
    assert errors == []
    assert seen[served["v1"].ref] > 0 and seen[served["v2"].ref] >= 10
