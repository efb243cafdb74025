"""Storage a cluster can share, end to end against a real S3-compatible server (moto's standalone
server, started here on localhost): train (Ray Train checkpoints to S3) -> publish (registry on
S3) -> load in a fresh process-local cache -> serve (the replica reads the registry on S3).

The proof that nothing takes a node-local shortcut: after training, the run's checkpoints and the
published version exist in the bucket, and the local ``$ADRAY_HOME`` holds no registry and no run
directory (only the scratch model directory of the run and the cache of fetched versions).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.helpers import assert_same_answer, free_port

pytestmark = pytest.mark.ray

BUCKET = "adray-test"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def test_train_publish_load_serve_on_s3(ray_cluster, s3_server: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from ray import serve

    from adray.cli_serve import serve_up
    from adray.config import load_config
    from adray.models import load_model
    from adray.paths import registry_uri, storage
    from adray.registry import Registry
    from adray.serving import decide_offline
    from adray.train import run_training
    from adray.workload import get_workload
    from serve_apps.app import AppArgs

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    uri = f"s3://{BUCKET}/team?endpoint_override={s3_server}&scheme=http"
    home = tmp_path / "home"
    monkeypatch.setenv("ADRAY_HOME", str(home))
    monkeypatch.setenv("ADRAY_STORAGE", uri)
    monkeypatch.delenv("ADRAY_REGISTRY", raising=False)
    import pyarrow.fs as pafs

    # the bucket exists on a real deployment; moto starts empty
    pafs.FileSystem.from_uri(f"s3://{BUCKET}?endpoint_override={s3_server}&scheme=http"
                             "&allow_bucket_creation=true")[0].create_dir(BUCKET)
    st = storage()
    assert not st.is_local and registry_uri().startswith(f"s3://{BUCKET}/team/registry?")

    wl = get_workload("pwiser")
    data = tmp_path / "data"
    cfg = load_config(wl.config_cls, "smoke", wl.configs_dir, {"data": str(data)})
    wl.make_data(cfg, data)
    out = run_training(wl, cfg, num_workers=1)
    assert out.model_ref == "pwiser@v0001"

    # everything shared is in the bucket ...
    files = st.list_files()
    assert "registry/pwiser/v0001/model.pt" in files and "registry/pwiser/v0001/manifest.json" in files
    assert "registry/pwiser/latest" in files
    run_files = [f for f in files if f.startswith("runs/pwiser-")]
    assert any(f.endswith("ADRAY_COMPLETED") for f in run_files)
    assert any("/checkpoint_" in f and f.endswith("best.pt") for f in run_files), run_files[:20]
    # ... and nothing of it on the local disk
    assert not (home / "registry").exists() and not (home / "runs").exists()

    # load from S3 into an empty cache: the same model
    shutil.rmtree(home / "cache", ignore_errors=True)
    reg = Registry()
    loaded = load_model("pwiser@latest", reg)
    assert loaded.version.ref == "pwiser@v0001" and loaded.path.is_relative_to(home / "cache")
    table = wl.evaluate(loaded.cfg, data, loaded.model, {})
    assert table["pwiser"]["test_auc_ctr"] == pytest.approx(out.metrics["test_auc_ctr"], abs=1e-6)

    # serve from S3: the replica fetches the version itself (its own cache, credentials via env)
    requests = wl.policy.sample_requests(cfg, data, 3, seed=0)
    want = decide_offline(out.model_ref, requests)
    app = "s3-pwiser"
    replica_env = CREDS | {"ADRAY_HOME": str(tmp_path / "replica-home")}
    url = serve_up(AppArgs(model="pwiser@latest", registry=registry_uri(), env=replica_env), port=free_port(),
                   name=app, route_prefix=f"/{app}")
    try:
        for req, expected in zip(requests, want):
            r = httpx.post(f"{url}/{app}/v1/rank", json=req, timeout=60)
            assert r.status_code == 200, r.text
            assert_same_answer(r.json(), expected)
    finally:
        serve.delete(app)
