"""The workload registry: an explicit dict, name -> Workload. Adding a family = one line here."""

from adray.workload import Workload
from workloads import crossdqn, mtorl, pwiser

WORKLOADS: dict[str, Workload] = {
    "pwiser": pwiser.WORKLOAD,
    "mtorl": mtorl.WORKLOAD,
    "crossdqn": crossdqn.WORKLOAD,
}
