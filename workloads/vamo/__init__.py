"""VAMO: validation-aligned multi-task generative auto-bidding, on an AuctionNet-style simulator.

``WORKLOAD`` is resolved on first access (PEP 562) so that importing the simulator
(``workloads.vamo.sim``: NumPy and SciPy only) does not import torch, Ray and pandas: the Ray tasks
that simulate days and the simulator benchmark stay small.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "WORKLOAD":
        from workloads.vamo.workload import WORKLOAD

        return WORKLOAD
    raise AttributeError(f"module 'workloads.vamo' has no attribute {name!r}")
