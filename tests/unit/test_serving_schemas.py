"""Serving pieces without Ray: the ranking policy's schema and scores, offline decide, model
resolution, the typed app builder, the body limit."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pydantic
import pytest
import torch
from fastapi import FastAPI

from adray.data.features import CategoricalFeature, FeatureMap
from adray.models import load_model
from adray.registry import ModelVersion, Registry
from adray.serving import BodyLimit, PolicyHandle, ServeError, decide_offline, resolve_model
from tests.helpers import publish_tiny as _publish_tiny
from workloads.pwiser.serving import RankingPolicy

FM = FeatureMap((CategoricalFeature("user_id", 50), CategoricalFeature("item_id", 30)), ("price",), ("click", "conversion"))


def publish_tiny(root: Path, seed: int, model: str) -> ModelVersion:
    return _publish_tiny(root, seed, model, FM)


def cand(i: int, **kw: object) -> dict:
    return {"ad_id": f"a{i}", "user_id": i % 60, "item_id": i % 30, "price": 0.1 * i, **kw}


# --------------------------------------------------------------------------- schema


def test_request_schema_names_missing_mistyped_and_unknown_fields() -> None:
    Req = RankingPolicy.request_schema({"feature_map": FM.to_dict()}, max_items=3)  # noqa: N806
    ok = Req.model_validate({"candidates": [cand(0), cand(1)]})
    assert [c["price"] for c in ok.model_dump()["candidates"]] == [0.0, 0.1]
    bad = [cand(0), cand(1, user_id="x"), cand(2, price=float("nan")), cand(3, colour="red")]
    del bad[0]["item_id"]
    with pytest.raises(pydantic.ValidationError) as err:
        Req.model_validate({"candidates": bad})
    locs = {e["loc"] for e in err.value.errors()}
    # max_length is checked first on the list; with 4 > 3 items the limit is what is reported.
    assert locs == {("candidates",)} and "at most 3" in str(err.value)
    with pytest.raises(pydantic.ValidationError) as err:
        Req.model_validate({"candidates": bad[:3]})
    assert {e["loc"] for e in err.value.errors()} == {
        ("candidates", 0, "item_id"), ("candidates", 1, "user_id"), ("candidates", 2, "price")}
    with pytest.raises(pydantic.ValidationError, match="colour"):
        Req.model_validate({"candidates": [bad[3]]})
    assert Req.model_validate({"candidates": []}).candidates == []


# --------------------------------------------------------------------------- scoring


def test_scores_match_the_network_and_map_unknown_ids_to_zero(tmp_path: Path) -> None:
    mv = publish_tiny(tmp_path, 0, "mmoe")
    loaded = load_model(mv.ref, Registry(tmp_path))
    policy = PolicyHandle(mv.ref, str(tmp_path)).policy
    df = pd.DataFrame([cand(i) for i in range(55)])  # user_id 50..54 are out of vocabulary
    got = policy.score_frame(df)
    x_cat = torch.tensor(np.stack([df.user_id.where(df.user_id < 50, 0), df.item_id], 1), dtype=torch.int64)
    x_num = torch.tensor(df[["price"]].to_numpy(), dtype=torch.float32)
    with torch.no_grad():
        want = loaded.model(x_cat, x_num)
    for task in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_array_equal(got[task], want[task].numpy())
    np.testing.assert_allclose(got["ctcvr"], got["ctr"] * got["cvr"], rtol=1e-6)
    answer = decide_offline("pwiser@latest", [{"request_id": "r", "candidates": df.to_dict("records")}],
                            str(tmp_path))[0]
    assert answer["model"] == mv.ref and [s["ad_id"] for s in answer["scores"]] == list(df["ad_id"])
    np.testing.assert_array_equal(np.array([s["pcvr"] for s in answer["scores"]], np.float32), want["cvr"].numpy())


def test_single_task_model_has_null_cvr(tmp_path: Path) -> None:
    mv = publish_tiny(tmp_path, 0, "dnn")
    out = PolicyHandle(mv.ref, str(tmp_path)).decide([{"candidates": [cand(1)]}])[0]["scores"][0]
    assert out["pcvr"] is None and out["pctcvr"] is None and 0 < out["pctr"] < 1
    empty = PolicyHandle(mv.ref, str(tmp_path)).decide([{"request_id": "e", "candidates": []}])[0]
    assert empty == {"request_id": "e", "model": mv.ref, "scores": [], "out_of_vocab": {}}


# --------------------------------------------------------------------------- resolution


def test_resolve_pins_latest_and_lists_versions_when_unknown(tmp_path: Path) -> None:
    publish_tiny(tmp_path, 0, "ple")
    publish_tiny(tmp_path, 1, "dnn")
    assert resolve_model("pwiser@latest", str(tmp_path)).ref == "pwiser@v0002"
    with pytest.raises(ServeError, match=r"available versions of 'pwiser': \['v0001', 'v0002'\]"):
        resolve_model("pwiser@v0007", str(tmp_path))
    with pytest.raises(ServeError, match=r"Published models: \['pwiser@v0001', 'pwiser@v0002'\]"):
        resolve_model("ranker@latest", str(tmp_path))


def test_serve_validates_config_args_with_the_typed_builder(tmp_path: Path) -> None:
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from serve_apps.app import build_app

    publish_tiny(tmp_path, 0, "ple")
    app = call_user_app_builder_with_args_if_necessary(build_app, {"model": "pwiser", "registry": str(tmp_path)})
    assert type(app).__name__ == "Application"
    with pytest.raises(pydantic.ValidationError, match="replicas"):
        call_user_app_builder_with_args_if_necessary(build_app, {"replicas": 2, "registry": str(tmp_path)})
    with pytest.raises(ServeError, match="v0009"):
        call_user_app_builder_with_args_if_necessary(build_app, {"model": "pwiser@9", "registry": str(tmp_path)})


# --------------------------------------------------------------------------- body limit


async def _post(app: object, body: bytes, chunked: bool) -> httpx.Response:
    async def chunks():  # no Content-Length: the limit must hold while streaming
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        return await c.post("/echo", content=chunks() if chunked else body,
                            headers={"content-type": "application/json"})


@pytest.mark.parametrize("chunked", [False, True])
def test_body_limit_413_states_the_limit(chunked: bool) -> None:
    import asyncio

    api = FastAPI()

    @api.post("/echo")
    async def echo(payload: dict) -> dict:
        return {"n": len(payload["x"])}

    app = BodyLimit(api, max_bytes=5000)
    small = asyncio.run(_post(app, json.dumps({"x": "a" * 100}).encode(), chunked))
    assert small.status_code == 200 and small.json() == {"n": 100}
    big = asyncio.run(_post(app, json.dumps({"x": "a" * 6000}).encode(), chunked))
    assert big.status_code == 413 and "exceeds the limit of 5000 bytes" in big.json()["detail"]


def test_encode_records_equals_the_dataframe_path() -> None:
    from adray.data.features import encode_records

    rows = [cand(i) for i in range(-3, 70)]  # negative and >= vocab ids map to 0 on both paths
    want = FM.arrays(pd.DataFrame(rows), "t", with_labels=False)
    got = encode_records(FM, rows)
    for k in ("x_cat", "x_num"):
        assert got[k].dtype == want[k].dtype
        np.testing.assert_array_equal(got[k], want[k])
    empty = encode_records(FM, [])
    assert empty["x_cat"].shape == (0, 2) and empty["x_num"].shape == (0, 1)
