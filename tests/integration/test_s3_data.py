"""Datasets on an object store, end to end against a real S3-compatible server (moto's standalone
server): `adray data make pwiser --out s3://...`, `adray data import ... --out s3://...`,
`adray data show s3://...` and `adray train pwiser --set data=s3://...`; an overwrite that fails
leaves the old dataset readable; a bucket that refuses this process's credentials is named.

The proof that nothing reads a local copy: the dataset's files exist only in the bucket (the test's
local folders hold no Parquet file), and training from the URI gives the same validation metrics
as training from a local copy of the same dataset.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from adray.cli import app

pytestmark = pytest.mark.ray

BUCKET = "adray-data"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _bucket(server: str) -> str:
    import pyarrow.fs as pafs

    pafs.FileSystem.from_uri(f"s3://{BUCKET}?endpoint_override={server}&scheme=http"
                             "&allow_bucket_creation=true")[0].create_dir(BUCKET)
    return f"endpoint_override={server}&scheme=http"


def _cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


@pytest.mark.slow  # ~40-120 s; S3 training is also in the default suite's test_s3_storage
def test_make_show_train_from_s3(ray_cluster, s3_server: str, tmp_path: Path,  # noqa: ANN001
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from adray.data import read_dataset

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("ADRAY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ADRAY_STORAGE", raising=False)
    monkeypatch.delenv("ADRAY_REGISTRY", raising=False)
    monkeypatch.chdir(tmp_path)
    query = _bucket(s3_server)
    uri = f"s3://{BUCKET}/pwiser-smoke?{query}"

    out = _cli("data", "make", "pwiser", "--config", "smoke", "--out", uri)
    assert f"dataset s3://{BUCKET}/pwiser-smoke" in out and "format=2" in out
    ds = read_dataset(uri)
    assert not ds.storage.is_local and ds.manifest["splits"]["train"]["rows"] == 4800
    assert [n for n in ds.storage.list_files()] == ["manifest.json", *sorted(
        f"{s}/{f['name']}" for s in ds.splits for f in ds.manifest["splits"][s]["files"])]
    shown = _cli("data", "show", uri)
    assert "train/part-00000-" in shown and "row groups" in shown
    assert not list(tmp_path.rglob("*.parquet"))  # nothing local

    # refused without --overwrite; a replacement that fails midway leaves the old one readable
    res = CliRunner().invoke(app, ["data", "make", "pwiser", "--config", "smoke", "--out", uri])
    assert res.exit_code != 0 and "a dataset is already there" in str(res.exception)
    from adray.data import DatasetWriter

    with pytest.raises(RuntimeError), DatasetWriter(uri, source="x", overwrite=True) as w:
        w.write("train", pd.DataFrame({"a": [1, 2]}))
        raise RuntimeError("died")
    assert read_dataset(uri).manifest["content_hash"] == ds.manifest["content_hash"]
    assert len(read_dataset(uri).storage.list_files()) == 1 + sum(len(ds.files(s)) for s in ds.splits)

    # train from the URI (the CLI, as a user types it) and from a local copy: the same model
    trained = _cli("train", "pwiser", "--config", "smoke", "--set", f"data={uri}", "--no-publish", "--json")
    local = tmp_path / "local"
    ds.storage.download_dir(local)
    again = _cli("train", "pwiser", "--config", "smoke", "--set", f"data={local}", "--no-publish", "--json")
    import json

    m_s3, m_local = json.loads(trained.splitlines()[-1])["metrics"], json.loads(again.splitlines()[-1])["metrics"]
    assert m_s3["val_auc_ctr"] == pytest.approx(m_local["val_auc_ctr"], abs=1e-6), (m_s3, m_local)


def test_import_to_s3(s3_server: str, samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adray.data import read_dataset

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    uri = f"s3://{BUCKET}/ali?{_bucket(s3_server)}"
    d = samples / "aliexpress_tiny"
    out = _cli("data", "import", "aliexpress", str(d / "train.csv"), str(d / "test.csv"), "--out", uri)
    assert f"dataset s3://{BUCKET}/ali" in out
    ds = read_dataset(uri)
    assert set(ds.splits) == {"train", "val", "test"}
    assert sum(b.num_rows for b in ds.iter_batches("test", batch_rows=100)) == ds.manifest["splits"]["test"]["rows"]


def test_bucket_refusing_credentials_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that checks signatures (moto with auth on) refuses the keys: every entry point says
    which URI, that it could not be read, and what to check, instead of a traceback."""
    from adray.data import DataError, DatasetWriter, check_out_dir, read_dataset

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, "moto server did not start"
                time.sleep(0.2)
        uri = f"s3://locked/ds?endpoint_override=127.0.0.1:{port}&scheme=http"
        expect = r"s3://locked/ds.*: cannot read the dataset (manifest|location) \(.*ACCESS_DENIED.*\); check the bucket"
        with pytest.raises(DataError, match=expect):
            read_dataset(uri)
        with pytest.raises(DataError, match=expect):
            check_out_dir(uri, overwrite=True)
        with pytest.raises(DataError, match=expect):
            DatasetWriter(uri, source="x")
    finally:
        proc.kill()
        proc.wait()


def test_generated_data_lives_on_the_storage_uri(s3_server: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``data: generate`` under ``$ADRAY_STORAGE=s3://...`` is made in the bucket (every node reads it
    there), not under the driver's local ``$ADRAY_HOME``; the second run reuses it."""
    from adray.config import load_config
    from adray.data import read_dataset
    from adray.train import prepare_data
    from adray.workload import data_dir_for, get_workload

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("ADRAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ADRAY_STORAGE", f"s3://{BUCKET}/gen?{_bucket(s3_server)}")
    wl = get_workload("pwiser")
    cfg = load_config(wl.config_cls, "smoke", wl.configs_dir)
    where = data_dir_for(wl, cfg)
    assert isinstance(where, str) and where.startswith(f"s3://{BUCKET}/gen/data/pwiser-"), where
    assert prepare_data(wl, cfg) == where
    first = read_dataset(where).manifest["content_hash"]
    assert not list(tmp_path.rglob("*.parquet"))  # nothing on the driver's disk
    assert prepare_data(wl, cfg) == where and read_dataset(where).manifest["content_hash"] == first
