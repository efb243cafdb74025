"""The workload registry: an explicit dict, name -> module. Adding a family = one line here.

Entries are imported on first access: a command (or a Ray Train worker) that needs one workload
does not pay for importing the others (RLlib alone takes seconds).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from adray.workload import Workload

_MODULES: dict[str, str] = {
    "pwiser": "workloads.pwiser",
    "mtorl": "workloads.mtorl",
    "crossdqn": "workloads.crossdqn",
}


class _Registry(Mapping[str, Workload]):
    def __init__(self, modules: dict[str, str]) -> None:
        self._modules = modules

    def __getitem__(self, name: str) -> Workload:
        return importlib.import_module(self._modules[name]).WORKLOAD

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)


WORKLOADS: Mapping[str, Workload] = _Registry(_MODULES)
