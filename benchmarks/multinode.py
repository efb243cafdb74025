"""Across nodes (issue 21): train, serve and tune on a head + two worker nodes, storage on S3.

On :class:`ray.cluster_utils.Cluster` (three Ray nodes on this one machine: a head with 0 CPUs,
where the driver runs, and ``node_a`` / ``node_b`` with 1 CPU each and a custom resource of their
name) with a moto S3 server as the storage URI (``$ADRAY_STORAGE``: registry, runs, sweeps) and
the dataset on S3:

1. ``adray data make pwiser --out s3://...`` (the CLI, in a subprocess);
2. pwiser training with 2 Ray Train workers on different nodes (``STRICT_SPREAD``), twice: the
   in-memory path (``ingest=memory``: the driver loads the splits and every worker gets all of them:
   the "before") and the streaming path (``ingest=stream``: Ray Data, ``get_dataset_shard``: each
   worker gets its share); rows and bytes each worker received, and its node, are measured in the
   workers (see *Measuring* below); the streaming run publishes its model to the registry on S3;
3. a Serve replica of that model, pinned to ``node_b`` (not the driver's node), loads it from the
   S3 registry and answers over HTTP the same as offline ``decide_offline``;
4. a 2-trial Tune sweep (``adray.tune.run_sweep``, 1 epoch) and the node of each trial (and of its
   Ray Train worker);
5. nothing read from the driver's disk: the nodes run with their own ``ADRAY_HOME`` and without the
   driver's ``AWS_*``/``ADRAY_*`` variables (the cluster is started before the driver sets them), the
   run, registry and dataset URIs are ``s3://``, and the driver's and nodes' local folders hold no
   dataset file, run or registry afterwards.

Measuring: a ``worker_process_setup_hook`` (job runtime_env) runs in every Ray worker process of
the job and, when the process imports them, wraps ``ray.data.DataIterator.iter_torch_batches`` (each
collated batch: rows and bytes of the stored columns the worker received from Ray Data) and
``adray.epochs.MemoryBatches`` (the training arrays a worker holds on the in-memory path); the
figures go to a named actor with the worker's rank, pid and node. Nothing in ``platform/`` changes.

Placement: ``run_training(placement="strict_spread")`` (``adray train --placement strict_spread``) puts the two Train workers on different nodes,
the Serve app built by ``serve_apps.app.build_app`` is rebuilt with ``resources={"node_b": 0.01}``
in the replicas' actor options, and Serve's proxy runs on the head only (three nodes on one host
cannot each bind the same HTTP port).

    python benchmarks/multinode.py --json            # starts moto and the Cluster itself
    python benchmarks/multinode.py --s3-endpoint 127.0.0.1:5000 --json

Last line with --json: ``{"train": {"workers": [{"rank", "node", "rows_read", "bytes_read"}], ...},
"serve": {"node", "answered", ...}, "tune": {"trials": [{"node", ...}]}, ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUCKET = "adray-multinode"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
METER = ("adray-multinode-meter", "adray-multinode")
"""(name, namespace) of the actor the workers report their reads to."""
NODES = ("node_a", "node_b")


def log(msg: str) -> None:
    print(f"[multinode] {msg}", flush=True)


# ----------------------------------------------------------------------------- measuring in the workers


class Meter:
    """A Ray actor (0 CPUs): what each worker process received, keyed by (phase, pid)."""

    def __init__(self) -> None:
        self.phase = "setup"
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def add(self, pid: int, node: str, rank: int | None, kind: str, rows: int, nbytes: int) -> None:
        entry = self.rows.setdefault((self.phase, pid), {"pid": pid, "node_id": node, "rank": rank, "kind": kind,
                                                         "rows_read": 0, "bytes_read": 0, "batches": 0})
        entry["rows_read"] += rows
        entry["bytes_read"] += nbytes
        entry["batches"] += 1

    def take(self, phase: str) -> list[dict[str, Any]]:
        return [v for (p, _), v in self.rows.items() if p == phase]


def setup_hook() -> None:  # a worker_process_setup_hook: runs in every Ray worker process of the job
    """Wrap, when (and if) the process imports them, Ray Data's ``iter_torch_batches`` and adray's
    ``MemoryBatches`` so that every worker reports what it received. Nothing is imported here: the
    hook costs nothing in the processes that never train (Serve replicas, read tasks...)."""
    import importlib.abc
    import os
    import sys
    import threading

    def whoami() -> tuple[str, int | None]:
        import ray

        rank = None
        try:
            import ray.train

            rank = ray.train.get_context().get_world_rank()
        except Exception:  # not in a Ray Train worker
            pass
        return ray.get_runtime_context().get_node_id(), rank

    def report(node: str, rank: int | None, kind: str, rows: int, nbytes: int) -> None:
        import ray

        try:
            meter = ray.get_actor(*METER_NAME)
        except ValueError:  # no meter: not this benchmark's job
            return
        meter.add.remote(os.getpid(), node, rank, kind, int(rows), int(nbytes))

    def patch_iterator(mod: Any) -> None:
        from ray.data.collate_fn import NumpyBatchCollateFn

        class Counting(NumpyBatchCollateFn):
            """Counts the stored columns of each batch, then collates as the wrapped one does."""

            def __init__(self, inner: Any, node: str, rank: int | None) -> None:
                self.inner, self.node, self.rank, self.lock = inner, node, rank, threading.Lock()

            def __call__(self, batch: Any) -> Any:
                rows = len(next(iter(batch.values()))) if batch else 0
                report(self.node, self.rank, "stream", rows, sum(v.nbytes for v in batch.values()))
                return self.inner(batch)

        orig = mod.DataIterator.iter_torch_batches

        def iter_torch_batches(self: Any, *args: Any, collate_fn: Any = None, **kwargs: Any) -> Any:
            if isinstance(collate_fn, NumpyBatchCollateFn):
                collate_fn = Counting(collate_fn, *whoami())
            return orig(self, *args, collate_fn=collate_fn, **kwargs)

        mod.DataIterator.iter_torch_batches = iter_torch_batches

    def patch_epochs(mod: Any) -> None:
        cls = getattr(mod, "MemoryBatches", None)
        if cls is None:  # an epochs module without it: the in-memory path is not measured
            return
        orig = cls.__init__

        def __init__(self: Any, arrays: Any, batch_size: int, *args: Any, **kwargs: Any) -> None:
            orig(self, arrays, batch_size, *args, **kwargs)
            if batch_size > 1 and arrays:  # the training split (validation is wrapped with batch_size 1)
                rows = len(next(iter(arrays.values())))
                report(*whoami(), "memory", rows, sum(v.nbytes for v in arrays.values()))

        cls.__init__ = __init__

    patches = {"ray.data.iterator": patch_iterator, "adray.epochs": patch_epochs}

    class AfterImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            if name not in patches:
                return None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None and spec.loader is not None:
                    exec_module = spec.loader.exec_module

                    def run(module: Any, _exec: Any = exec_module, _name: str = name) -> None:
                        _exec(module)
                        patches.pop(_name)(module)

                    spec.loader.exec_module = run  # type: ignore[method-assign]
                    return spec
            return None

    for name in list(patches):
        if name in sys.modules:
            patches.pop(name)(sys.modules[name])
    if patches:
        sys.meta_path.insert(0, AfterImport())


METER_NAME = METER  # the hook is pickled by value and reads this global


# ----------------------------------------------------------------------------- the cluster and storage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(auth: bool) -> tuple[str, subprocess.Popen[bytes], dict[str, str]]:
    """A moto S3 server on localhost: ``(host:port, process, credentials)``.

    ``auth``: the server checks every request's signature against its IAM users (after the three
    unauthenticated calls that create one user, its S3 policy and its key): only a process holding
    the driver's key reaches the bucket; a node that lacks it is refused."""
    import httpx

    exe = Path(sys.executable).with_name("moto_server")
    port = free_port()
    env = os.environ | ({"INITIAL_NO_AUTH_ACTION_COUNT": "3"} if auth else {})
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1)  # not an AWS action: not counted
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.2)
    if not auth:
        return f"127.0.0.1:{port}", proc, dict(CREDS)
    import boto3

    iam = boto3.client("iam", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    iam.create_user(UserName="adray-driver")
    iam.put_user_policy(UserName="adray-driver", PolicyName="s3", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="adray-driver")["AccessKey"]
    return f"127.0.0.1:{port}", proc, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                                       "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                                       "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def without_env(names: list[str]) -> Iterator[None]:
    """The block runs without ``names`` in the environment (the nodes it starts inherit none)."""
    saved = {k: os.environ.pop(k) for k in names if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def start_cluster(root: Path, node_cpus: int) -> tuple[Any, dict[str, str]]:
    """A head (0 CPUs: the driver's node) and two worker nodes; ``{node_id: label}``.

    The nodes start before the driver sets its ``AWS_*``/``ADRAY_*`` variables, and each gets its
    own ``ADRAY_HOME``: a worker that needs a credential or a local path only the driver has fails."""
    from ray._common.utils import get_ray_address_file
    from ray.cluster_utils import Cluster
    from ray.util import get_node_ip_address

    private = [k for k in os.environ if k.startswith(("AWS_", "ADRAY_"))] + ["RAY_ADDRESS"]
    labels = {}
    address_file = Path(get_ray_address_file(None))
    previous = address_file.read_text() if address_file.is_file() else None
    # Every process of the cluster knows its address (RAY_ADDRESS): with other Ray instances on this
    # host, Train's PlacementGroupCleaner (State API) refuses to guess which one is its own.
    gcs_port = free_port()
    address = f"{get_node_ip_address()}:{gcs_port}"
    with without_env(private), restored(address_file, previous):
        def env(label: str) -> dict[str, str]:
            home = root / f"{label}-home"
            home.mkdir(parents=True, exist_ok=True)
            return {"ADRAY_HOME": str(home), "AWS_EC2_METADATA_DISABLED": "true", "RAY_TRAIN_V2_ENABLED": "1",
                    "RAY_ADDRESS": address}

        # the dashboard serves the State API (where each actor ran) and Train's placement group cleaner
        cluster = Cluster()
        try:
            head = cluster.add_node(num_cpus=0, resources={"head": 1}, env_vars=env("head"), gcs_server_port=gcs_port,
                                    object_store_memory=200 * 1024 * 1024, include_dashboard=True,
                                    dashboard_port=free_port())
            labels[head.node_id] = "head"
            for label in NODES:
                node = cluster.add_node(num_cpus=node_cpus, resources={label: 1}, env_vars=env(label),
                                        object_store_memory=200 * 1024 * 1024)
                labels[node.node_id] = label
            cluster.wait_for_nodes()
        except BaseException:
            cluster.shutdown()
            raise
    if cluster.address != address:
        raise RuntimeError(f"the head's GCS is at {cluster.address}, not {address}")
    return cluster, labels


@contextlib.contextmanager
def restored(path: Path, text: str | None) -> Iterator[None]:
    """``path`` as it was after the block: ``Cluster`` writes its address into Ray's address file,
    which another ``ray start`` cluster on this host (``adray serve up``) is found by."""
    try:
        yield
    finally:
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text)


def pinned(app: Any, resources: dict[str, float]) -> Any:
    """``app`` with ``resources`` added to the actor options of each of its deployments (Serve has no
    other way to place a replica on a node; ``AppArgs`` has no field for it yet)."""
    from ray.serve import Application

    d = app._bound_deployment
    args = tuple(pinned(a, resources) if isinstance(a, Application) else a for a in d.init_args)
    opts = dict(d.ray_actor_options or {})
    opts["resources"] = {**(opts.get("resources") or {}), **resources}
    return Application(d.options(ray_actor_options=opts, _init_args=args, _init_kwargs=d.init_kwargs))


def actors(labels: dict[str, str], class_part: str) -> list[dict[str, Any]]:
    """Actors of the cluster whose class name contains ``class_part``: node label, pid, state."""
    from ray.util.state import list_actors

    out = []
    for a in list_actors(limit=10_000, detail=True, raise_on_missing_output=False):
        if class_part in (a.class_name or ""):
            out.append({"class": a.class_name, "node": labels.get(a.node_id, a.node_id), "pid": a.pid,
                        "state": a.state, "repr": getattr(a, "repr_name", "") or "", "name": a.name or ""})
    return out


def read_tasks(labels: dict[str, str], since_names: set[str]) -> dict[str, int]:
    """Ray Data read tasks (``ReadFilesParquetV2...``) per node, those not in ``since_names`` (task ids)."""
    from ray.util.state import list_tasks

    per: dict[str, int] = {}
    for t in list_tasks(limit=10_000, detail=True, raise_on_missing_output=False):
        if "Parquet" in (t.name or "") and "Read" in (t.name or "") and t.task_id not in since_names:
            since_names.add(t.task_id)
            node = labels.get(t.node_id, t.node_id or "?")
            per[node] = per.get(node, 0) + 1
    return per


# ----------------------------------------------------------------------------- the steps


def make_dataset(uri: str, rows: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "adray.cli", "data", "make", "pwiser", "--config", "smoke",
                          "--set", f"rows={rows}", "--out", uri, "--overwrite"], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"adray data make failed:\n{out.stdout}\n{out.stderr}")
    from adray.data import read_dataset

    ds = read_dataset(uri)
    files = ds.files("train")
    return {"uri": ds.display, "make_s": round(time.perf_counter() - t0, 2), "train_rows": ds.manifest["splits"]["train"]["rows"],
            "train_files": len(files), "train_file_bytes": sum(int(f.get("bytes") or 0) for f in files)}


def train(wl: Any, uri: str, ingest: str, meter: Any, labels: dict[str, str], publish: bool,
          seen_tasks: set[str]) -> dict[str, Any]:
    import ray

    from adray.config import load_config
    from adray.registry import Registry
    from adray.train import run_training

    cfg = load_config(wl.config_cls, "smoke", wl.configs_dir, {"data": uri, "epochs": 1, "ingest": ingest})
    phase = f"train-{ingest}"
    ray.get(meter.set_phase.remote(phase))
    t0 = time.perf_counter()
    how = "run_training(placement='strict_spread'): ScalingConfig(placement_strategy='STRICT_SPREAD')"
    out = run_training(wl, cfg, num_workers=2, publish=publish, placement="strict_spread")
    wall = time.perf_counter() - t0
    time.sleep(1.0)  # the last fire-and-forget reports
    got = ray.get(meter.take.remote(phase))
    workers = sorted(({"rank": w["rank"], "node": labels.get(w["node_id"], w["node_id"]), "rows_read": w["rows_read"],
                       "bytes_read": w["bytes_read"], "batches": w["batches"], "pid": w["pid"]}
                      for w in got if w["rank"] is not None), key=lambda w: w["rank"])
    res: dict[str, Any] = {"ingest": ingest, "wall_s": round(wall, 2), "placement": how, "workers": workers,
                           "read_tasks_per_node": read_tasks(labels, seen_tasks) if ingest == "stream" else {},
                           "val_auc_ctr": out.metrics.get("val_auc_ctr"), "model_ref": out.model_ref,
                           "ingest_stream": out.timings.get("ingest_stream")}
    if out.model_ref:
        mv = Registry().get(out.model_ref)
        res["registry_version"] = mv.location
        res["registry_manifest"] = {k: mv.manifest.get(k) for k in ("run", "dataset")}
    return res


def serve(wl: Any, ref: str, uri: str, creds: dict[str, str], root: Path, labels: dict[str, str]) -> dict[str, Any]:
    import httpx
    from ray import serve as rs

    from adray.cli_serve import deploy
    from adray.config import load_config
    from adray.paths import registry_uri
    from adray.serving import decide_offline
    from serve_apps.app import AppArgs, build_app

    cfg = load_config(wl.config_cls, "smoke", wl.configs_dir, {"data": uri})
    requests = wl.policy.sample_requests(cfg, uri, 4, seed=0)
    want = decide_offline(ref, requests)
    replica_home = root / "node_b-home" / "replica"
    # the replica's credentials travel as AppArgs.env (what `serve up` offers for nodes without their own)
    args = AppArgs(model=ref, registry=registry_uri(), env=creds | {"ADRAY_HOME": str(replica_home)})
    app = pinned(build_app(args), {"node_b": 0.01})
    port = free_port()
    # one proxy, on the head: the nodes share this host, and every node's proxy would bind one port
    rs.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    t0 = time.perf_counter()
    name = "multinode"
    url = deploy(app, address=None, host="127.0.0.1", port=port, name=name, route_prefix=f"/{name}", wait_s=300)
    deploy_s = time.perf_counter() - t0
    answered, same = 0, True
    try:
        with httpx.Client(base_url=f"{url}/{name}", timeout=60) as client:
            info = client.get("/v1/model").json()
            for req, expected in zip(requests, want):
                r = client.post(info["route"], json=req)
                if r.status_code == 200:
                    answered += 1
                    same = same and _close(r.json(), expected)
        replicas = actors(labels, f"ServeReplica:{name}:")
    finally:
        rs.delete(name)
    cached = [str(p.relative_to(root)) for p in replica_home.rglob("model.pt")]
    return {"node": next((a["node"] for a in replicas if a["class"].endswith("PolicyDeployment")), None),
            "replicas": [{"deployment": a["class"].rsplit(":", 1)[-1], "node": a["node"]} for a in replicas
                         if a["state"] == "ALIVE"],
            "answered": answered, "asked": len(requests), "same_as_offline": same, "deploy_s": round(deploy_s, 2),
            "replica_cache": cached, "registry": registry_uri().split("?")[0]}


def _close(got: Any, want: Any) -> bool:
    import math

    if isinstance(want, float) or isinstance(got, float):
        return isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-9)
    if isinstance(want, dict):
        return isinstance(got, dict) and sorted(got) == sorted(want) and all(_close(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(_close(g, w) for g, w in zip(got, want))
    return got == want


def tune(uri: str, meter: Any, labels: dict[str, str]) -> dict[str, Any]:
    import ray

    from adray.tune import load_space, run_sweep

    ray.get(meter.set_phase.remote("tune"))
    space = load_space(REPO / "tune_spaces" / "pwiser.yaml")
    t0 = time.perf_counter()
    res = run_sweep(space, trials=2, overrides={"data": uri, "epochs": 1}, num_workers=1, publish=False)
    wall = time.perf_counter() - t0
    time.sleep(1.0)
    trials = actors(labels, "ImplicitFunc")
    workers = ray.get(meter.take.remote("tune"))
    train_workers = actors(labels, "RayTrainWorker")
    by_pid = {a["pid"]: a["node"] for a in train_workers}
    return {"wall_s": round(wall, 2), "num_trials": res.num_trials,
            "trials": [{"node": t["node"], "actor": t["repr"] or t["name"] or t["pid"]} for t in trials],
            "train_workers": [{"node": labels.get(w["node_id"], w["node_id"]), "rows_read": w["rows_read"],
                               "kind": w["kind"], "actor_node": by_pid.get(w["pid"])} for w in workers
                              if w["rank"] is not None],
            "best": res.best_metrics}


def local_audit(roots: dict[str, Path]) -> dict[str, Any]:
    """What each local folder holds after the run. Shared state (a dataset file, a run, a registry
    version: ``registry/``, ``runs/``, ``data/``) must be on S3 only; what may be local is scratch
    (a run's model directory before publishing, a trial's before upload), the cache of versions
    fetched from the registry, and the sweep's results table and plot the driver prints (also
    uploaded beside the sweep)."""
    out: dict[str, Any] = {}
    for label, root in roots.items():
        files = [p.relative_to(root) for p in root.rglob("*") if p.is_file()] if root.exists() else []
        out[label] = {"files": len(files),
                      "parquet": sum(p.suffix == ".parquet" for p in files),
                      "registry_or_runs": sorted({p.parts[0] for p in files if p.parts[0] in ("registry", "runs", "data")}),
                      "top": sorted({p.parts[0] for p in files}),
                      "sweeps": sorted(p.name for p in files if p.parts[0] == "sweeps")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--s3-endpoint", help="host:port of an S3 server (default: start moto_server here)")
    ap.add_argument("--rows", type=int, default=60_000, help="rows of the generated pwiser dataset (80%% train)")
    ap.add_argument("--node-cpus", type=int, default=2,
                    help="logical CPUs of each worker node (the head has 0); 2 x 2 = 4 logical CPUs on this "
                         "2-core machine: a node must keep 1 whole CPU free beside its Train worker for Ray "
                         "Data's ListFiles task")
    ap.add_argument("--auth", action="store_true",
                    help="moto checks credentials: only the driver holds a key, the nodes none (finds every "
                         "worker that opens storage from a URI string with its own environment)")
    ap.add_argument("--footer-actors", type=int, default=0,
                    help="RAY_DATA_PARQUET_FOOTER_NUM_ACTORS for the driver's reads (Ray 2.60 default: 32 "
                         "FooterReader actors, each a new worker process, per read of the split); 0: Ray's default")
    ap.add_argument("--skip", default="", help="comma-separated steps to skip: memory,serve,tune")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line last")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    t_start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="adray-multinode-"))
    moto = None
    cluster = None
    try:
        endpoint, creds = args.s3_endpoint, dict(CREDS)
        if endpoint is None:
            endpoint, moto, creds = start_moto(args.auth)
        log(f"S3 at {endpoint}; local folders under {root}")
        t0 = time.perf_counter()
        for attempt in range(1, 4):  # Ray gives a node 30 s to register: a busy host can miss that
            try:
                cluster, labels = start_cluster(root, args.node_cpus)
                break
            except Exception as exc:  # noqa: BLE001
                if attempt == 3:
                    raise
                log(f"cluster start failed ({exc}); again")
        cluster_s = time.perf_counter() - t0
        log(f"cluster up in {cluster_s:.1f} s: " + ", ".join(f"{v}={k[:8]}" for k, v in labels.items()))

        # the driver: its own HOME-like folder, credentials and storage URI (the nodes have none of these)
        driver_home = root / "driver-home"
        query = f"endpoint_override={endpoint}&scheme=http"
        os.environ.update(creds | {"ADRAY_HOME": str(driver_home), "ADRAY_STORAGE": f"s3://{BUCKET}/team?{query}",
                                   "RAY_TRAIN_V2_ENABLED": "1", "RAY_ADDRESS": cluster.address})
        os.environ.pop("ADRAY_REGISTRY", None)
        if args.footer_actors:
            os.environ["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] = str(args.footer_actors)
        import pyarrow.fs as pafs

        pafs.FileSystem.from_uri(f"s3://{BUCKET}?{query}&allow_bucket_creation=true")[0].create_dir(BUCKET)

        import ray

        from adray.runtime import ensure_ray
        from adray.workload import get_workload

        ensure_ray(runtime_env={"worker_process_setup_hook": setup_hook})  # joins RAY_ADDRESS, as a user's command does
        meter = ray.remote(num_cpus=0)(Meter).options(name=METER[0], namespace=METER[1],
                                                      resources={"head": 0.01}).remote()
        ray.get(meter.take.remote("setup"))
        log(f"driver on node {labels.get(ray.get_runtime_context().get_node_id())}; cluster resources "
            f"{ {k: v for k, v in ray.cluster_resources().items() if not k.startswith(('node:', 'memory', 'object'))} }")

        uri = f"s3://{BUCKET}/data/pwiser?{query}"
        data = make_dataset(uri, args.rows)
        log(f"dataset {data['uri']}: {data['train_rows']} train rows in {data['train_files']} file(s), "
            f"{data['train_file_bytes']:,} bytes (made in {data['make_s']} s)")

        wl = get_workload("pwiser")
        seen: set[str] = set()
        report: dict[str, Any] = {"dataset": data, "cluster": {"head_cpus": 0, "node_cpus": args.node_cpus,
                                                               "start_s": round(cluster_s, 2)}}
        errors: dict[str, str] = {}

        def step(name: str, fn: Any, *fn_args: Any, **fn_kwargs: Any) -> Any:
            """Run one step; a failure is recorded (``errors``) and the next steps still run."""
            try:
                return fn(*fn_args, **fn_kwargs)
            except Exception as exc:  # noqa: BLE001 - the figures say which step failed and why
                errors[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:600]}"
                log(f"{name} FAILED: {errors[name]}")
                return None

        if "memory" not in skip:
            before = step("train_before", train, wl, uri, "memory", meter, labels, publish=True, seen_tasks=seen)
            if before:
                report["train_before"] = before
                _print_train("before (ingest=memory)", before)
        after = step("train", train, wl, uri, "stream", meter, labels, publish=True, seen_tasks=seen)
        if after:
            report["train"] = after
            _print_train("after (ingest=stream)", after)
        ref = (after or report.get("train_before") or {}).get("model_ref")
        if "serve" not in skip and ref:
            s = step("serve", serve, wl, ref, uri, creds, root, labels)
            if s:
                report["serve"] = s
                log(f"serve {ref}: replicas {s['replicas']}; answered {s['answered']}/{s['asked']} "
                    f"(same as offline: {s['same_as_offline']}); replica cache {s['replica_cache']}")
        if "tune" not in skip:
            t = step("tune", tune, uri, meter, labels)
            if t:
                report["tune"] = t
                log(f"tune: {t['num_trials']} trials in {t['wall_s']} s; trial nodes {[x['node'] for x in t['trials']]}; "
                    f"their Train workers {[(w['node'], w['kind'], w['rows_read']) for w in t['train_workers']]}")
        report["errors"] = errors

        report["local"] = local_audit({"driver": driver_home, **{lb: root / f"{lb}-home" for lb in ("head", *NODES)}})
        from adray.paths import storage

        shared = storage().list_files()
        report["s3"] = {"registry_files": sum(f.startswith("registry/") for f in shared),
                        "run_files": sum(f.startswith("runs/") for f in shared),
                        "sweep_files": sum(f.startswith("sweeps/") for f in shared)}
        log(f"local folders: {report['local']}")
        log(f"on S3: {report['s3']}")
        report["wall_s"] = round(time.perf_counter() - t_start, 1)
        log(f"wall time {report['wall_s']} s")
        if args.json:
            print(json.dumps(report, default=str))
    finally:
        with contextlib.suppress(Exception):
            import ray

            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if moto is not None:
            moto.kill()
            moto.wait()
        shutil.rmtree(root, ignore_errors=True)


def _print_train(title: str, r: dict[str, Any]) -> None:
    log(f"train {title}: {r['wall_s']} s, val_auc_ctr={r['val_auc_ctr']}, model {r['model_ref']}")
    for w in r["workers"]:
        log(f"  rank {w['rank']} on {w['node']}: {w['rows_read']:,} rows, {w['bytes_read']:,} bytes "
            f"({w['batches']} batch(es))")
    if r["read_tasks_per_node"]:
        log(f"  Ray Data read tasks per node: {r['read_tasks_per_node']}")


if __name__ == "__main__":
    main()
