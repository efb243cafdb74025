"""The workload registry: an explicit dict, name -> module path. Adding a family = one line here.

The module (``workloads/<name>/__init__.py``) exposes ``WORKLOAD``, an ``adray.workload.Workload``.
Modules are imported on first use by ``adray.workload.get_workload``: a command (or a Ray Train
worker) that needs one workload does not pay for importing the others (RLlib alone takes seconds).
This file imports nothing, so the platform can read it without an import cycle.
"""

WORKLOADS: dict[str, str] = {
    "pwiser": "workloads.pwiser",
    "mtorl": "workloads.mtorl",
    "crossdqn": "workloads.crossdqn",
    "vamo": "workloads.vamo",
    "drlput": "workloads.drlput",
}
