"""Across nodes (issue 21): ``benchmarks/multinode.py`` on a head + two worker nodes with S3 storage.

The test session shares one local Ray (``conftest.ray_cluster``), and a ``ray.cluster_utils.Cluster``
cannot live beside it in one process, so the benchmark runs in a subprocess (it starts its own moto
server and Cluster) and this test checks its last JSON line:

* the 2 Ray Train workers ran on the two worker nodes, and on the streaming path each received
  about half of the training rows and bytes (the in-memory "before": each held all of them);
* the Serve replica ran on ``node_b`` (not the driver's head node), loaded the model from the S3
  registry and answered every request as offline ``decide_offline`` does;
* the 2 Tune trials ran on worker nodes (both nodes used);
* the run, the registry version and the dataset are ``s3://`` URIs, and no local folder (driver's or
  nodes') holds a dataset file, a run or a registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_train_serve_tune_across_nodes() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "multinode.py"), "--json", "--auth"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, f"multinode.py failed ({out.returncode}):\n{out.stdout[-6000:]}\n{out.stderr[-6000:]}"
    print("\n".join(line for line in out.stdout.splitlines() if line.startswith("[multinode]")))  # the figures, with -s
    report = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    assert report["errors"] == {}, report["errors"]
    rows = report["dataset"]["train_rows"]

    # training: two workers on two nodes, each with about half of the rows (streaming)
    workers = report["train"]["workers"]
    assert [w["rank"] for w in workers] == [0, 1], workers
    assert {w["node"] for w in workers} == {"node_a", "node_b"}, workers
    total = sum(w["rows_read"] for w in workers)
    assert rows * 0.98 <= total <= rows, (total, rows)  # every row once; drop_last may leave < a batch each
    for w in workers:
        assert 0.4 * rows <= w["rows_read"] <= 0.6 * rows, workers
        assert w["bytes_read"] > 0
    assert abs(workers[0]["bytes_read"] - workers[1]["bytes_read"]) <= 0.2 * max(w["bytes_read"] for w in workers)
    before = report.get("train_before")
    if before:  # the in-memory path: every worker holds the whole training split
        assert {w["node"] for w in before["workers"]} == {"node_a", "node_b"}, before["workers"]
        assert all(w["rows_read"] == rows for w in before["workers"]), before["workers"]

    # everything shared is on S3
    assert report["train"]["model_ref"].startswith("pwiser@v")
    assert report["train"]["registry_version"].startswith("s3://"), report["train"]
    assert all(str(v).startswith("s3://") for v in report["train"]["registry_manifest"].values()), report["train"]

    # serving: the replica on node_b (not the driver's head) answers as offline
    serve = report["serve"]
    assert serve["node"] == "node_b", serve
    assert serve["answered"] == serve["asked"] > 0 and serve["same_as_offline"], serve

    # tuning: both trials ran, on the worker nodes, and together on both
    trials = report["tune"]["trials"]
    assert len(trials) == 2 and {t["node"] for t in trials} == {"node_a", "node_b"}, trials

    # nothing of the data, runs or registry on any local folder
    for label, local in report["local"].items():
        assert local["parquet"] == 0 and local["registry_or_runs"] == [], (label, local)
        assert set(local["sweeps"]) <= {"results.csv", "objective.png"}, (label, local)  # the driver's printout
