"""The policy deployment: one published model of any workload, requests -> decisions.

Requests are micro-batched with ``@serve.batch``. By default each request of a batch gets its own
``decide`` call through the same :class:`adray.serving.PolicyHandle` that offline inference uses,
so an answer is bit-identical to offline inference of the same request. With ``concat=True`` a
batch goes through one ``decide`` call (one forward pass: cheaper per request), but a float32
result then depends on its batch-mates in the last bits (~1e-7): BLAS picks kernels by matrix
size. See benchmarks/serve_load.py.
"""

from __future__ import annotations

from typing import Any

import torch
from ray import serve

from adray.serving import PolicyHandle


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64, graceful_shutdown_timeout_s=20)
class PolicyDeployment:
    """Loads ``model_ref`` (a pinned name@vNNNN) from the registry at ``registry``."""

    def __init__(self, model_ref: str, registry: str, max_batch_size: int, batch_wait_timeout_s: float,
                 concat: bool = False, torch_threads: int = 1) -> None:
        # One intra-op thread per replica: a replica reserves a fraction of a CPU, and several
        # replicas, the proxy and Train share the cores; scale out with replicas instead.
        torch.set_num_threads(torch_threads)
        self.handle = PolicyHandle(model_ref, registry)
        self.concat = concat
        self.decide.set_max_batch_size(max_batch_size)
        self.decide.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def decide(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each item: one validated request (a plain dict) -> its answer (a plain dict)."""
        if self.concat:
            return self.handle.decide(batch)
        return [self.handle.decide([request])[0] for request in batch]

    def model(self) -> str:
        return self.handle.ref
