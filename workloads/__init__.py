"""The workload registry: an explicit dict, name -> Workload. Adding a family = one line here."""

from adray.workload import Workload

WORKLOADS: dict[str, Workload] = {}
