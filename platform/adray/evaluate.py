"""``adray eval``: published models compared with the paper's metrics, beside the workload's baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adray.config import parse_set
from adray.models import load_model
from adray.workload import WorkloadError, get_workload


def run_eval(
    workload: str,
    ref: str,
    config: str | None = None,
    sets: list[str] | None = None,
    data: Path | None = None,
    compare: dict[str, str] | None = None,
) -> tuple[str, dict[str, float], dict[str, dict[str, float]]]:
    """Returns (resolved model ref, metrics of the model, {method: metrics} incl. baselines).

    ``compare`` maps labels to other published models of the same workload (ablations, a model
    trained with another loss); each is evaluated on the same data under its label. Nothing is
    trained here.
    """
    wl = get_workload(workload)
    loaded = load_model(ref)
    others: dict[str, Any] = {}
    for label, other_ref in (compare or {}).items():
        other = load_model(other_ref)
        if other.workload.name != wl.name:
            raise WorkloadError(f"--compare {label}={other_ref}: a {other.workload.name!r} model, not {workload!r}")
        others[label] = other.model
    if loaded.workload.name != wl.name:
        raise WorkloadError(f"model {loaded.version.ref} belongs to workload {loaded.workload.name!r}, not {workload!r}")
    cfg = loaded.cfg
    if config:
        from adray.config import load_config

        cfg = load_config(wl.config_cls, config, wl.configs_dir)
    if sets:
        cfg = cfg.override(parse_set(sets), "--set")
    data_dir = Path(data or loaded.version.manifest.get("dataset") or "")
    methods = wl.evaluate(cfg, data_dir, loaded.model, others)
    return loaded.version.ref, dict(methods.get(wl.name, {})), methods


def parse_compare(items: list[str] | None) -> dict[str, str]:
    """``["no_aux=crossdqn-no-aux@latest", ...]`` -> ``{"no_aux": "crossdqn-no-aux@latest"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        label, sep, ref = item.partition("=")
        if not sep or not label or not ref:
            raise WorkloadError(f"--compare {item!r}: expected LABEL=NAME@VERSION")
        out[label.strip()] = ref.strip()
    return out
