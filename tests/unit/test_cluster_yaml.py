"""cluster.yaml passes Ray's own cluster-launcher schema and installs the project like the README."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_validates_with_ray_schema(raw: dict) -> None:
    cfg = prepare_config(copy.deepcopy(raw))  # merges Ray's provider defaults, as `ray up` does
    validate_config(cfg)
    assert cfg["head_node_type"] == "cpu_head"


def test_ray_schema_rejects_a_broken_copy(raw: dict) -> None:
    # The validation above can fail: a misspelt node-type field is rejected by the same schema.
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu_worker"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(broken))


def test_cpu_head_and_autoscaling_gpu_worker(raw: dict) -> None:
    types = raw["available_node_types"]
    head, gpu = types[raw["head_node_type"]], types["gpu_worker"]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] >= 1
    assert gpu["resources"]["GPU"] >= 1
    assert 0 <= gpu["min_workers"] < gpu["max_workers"] <= raw["max_workers"]


def test_setup_installs_like_the_readme(raw: dict) -> None:
    # The README's install is `make install` (venv, torch pin, editable project with [dev]).
    makefile = (REPO / "Makefile").read_text()
    torch_pin = re.search(r"pip install -q (torch==[\d.]+)", makefile).group(1)
    assert "-e '.[dev]'" in makefile
    assert torch_pin in (REPO / "pyproject.toml").read_text()
    setup = " && ".join(raw["setup_commands"])
    assert "cd ~/adray && make install" in setup
    assert raw["file_mounts"]["~/adray"] == "."
    # Ray must start from the project's venv (the pinned Ray), on the head and on workers.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in raw[key] if "ray start" in c]
        assert start and all("~/adray/.venv/bin/ray start" in c for c in start), key
        # ...with the venv on PATH: job entrypoints such as `adray train` run in Ray's environment.
        assert all("PATH=$HOME/adray/.venv/bin:$PATH" in c for c in start), key


def test_every_node_shares_one_storage_uri(raw: dict) -> None:
    """Registry, runs and sweeps must be where every node sees them: the same remote URI."""
    from adray.storage import Storage

    uris = set()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(c for c in raw[key] if "ray start" in c)
        found = [u.strip("'\"") for u in re.findall(r"ADRAY_STORAGE=(\S+)", start)]
        assert found, f"{key}: no ADRAY_STORAGE"
        uris.update(found)
    assert len(uris) == 1
    assert not Storage(uris.pop()).is_local
