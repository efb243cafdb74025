"""Where adray keeps its state.

* ``$ADRAY_HOME`` (default ``./.adray``): always a local folder: scratch space of runs, the cache
  of registry versions fetched from remote storage.
* ``$ADRAY_STORAGE`` (default: ``$ADRAY_HOME``): the storage URI every node must see (a local
  path, ``s3://...``, ``gs://...``, an NFS mount): ``registry/``, ``runs/`` (Ray Train's
  storage_path), ``sweeps/``. ``$ADRAY_REGISTRY`` overrides the registry's URI alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from adray.storage import Storage


def home() -> Path:
    return Path(os.environ.get("ADRAY_HOME", ".adray")).absolute()


def storage_uri() -> str:
    return os.environ.get("ADRAY_STORAGE") or str(home())


def storage() -> Storage:
    return Storage(storage_uri())


def registry_uri() -> str:
    return os.environ.get("ADRAY_REGISTRY") or storage().child("registry").uri


def runs_storage() -> Storage:
    """Ray Train run directories (checkpoints; resume by run name)."""
    return storage().child("runs")


def sweeps_storage() -> Storage:
    """Ray Tune experiments, their results tables and plots."""
    return storage().child("sweeps")


def scratch_root() -> Path:
    """Local scratch: a run's working directory on the node that runs it."""
    return home() / "scratch"


def cache_root() -> Path:
    """Local copies of registry versions read from remote storage."""
    return home() / "cache"
