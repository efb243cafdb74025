"""The ranking deployment: one published pwiser model, candidate ads -> pCTR, pCVR, pCTCVR.

Requests are micro-batched with ``@serve.batch``. By default each request of a batch gets its own
forward pass through the same :class:`adray.serving.Scorer` that offline prediction uses, so a
request's scores are bit-identical to offline prediction of the same candidates. With
``concat=True`` a batch's candidates go through one DataFrame and one forward pass (the
network alone: 5.6 ms for 400 rows vs 10.5 ms for 8 x 50 with the default PLE on one CPU thread) but a row's float32 result then depends on its batch-mates in the
last bits (~1e-7): BLAS picks kernels by matrix size. See benchmarks/serve_load.py.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from ray import serve

from adray.models import load_model
from adray.registry import Registry
from adray.serving import TASKS, Scorer


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64, graceful_shutdown_timeout_s=20)
class Ranking:
    """Loads ``model_ref`` (a pinned name@vNNNN) from the registry at ``registry``."""

    def __init__(self, model_ref: str, registry: str, max_batch_size: int, batch_wait_timeout_s: float,
                 concat: bool = False, torch_threads: int = 1) -> None:
        # One intra-op thread per replica: a replica reserves a fraction of a CPU, and several
        # replicas, the proxy and Train share the cores; scale out with replicas instead.
        torch.set_num_threads(torch_threads)
        self.scorer = Scorer(load_model(model_ref, Registry(registry)))
        self.concat = concat
        self.score.set_max_batch_size(max_batch_size)
        self.score.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def score(self, batch: list[dict[str, list[Any]]]) -> list[dict[str, Any]]:
        """Each item: ``{feature: [values]}`` of one request -> ``{"model", task: [p] or None}``."""
        if not self.concat:
            return [self._item(self.scorer.score_frame(pd.DataFrame(cols)), 0, _rows(cols)) for cols in batch]
        sizes = [_rows(cols) for cols in batch]
        merged = {name: [v for cols in batch for v in cols.get(name, [])] for name in batch[0]}
        scores = self.scorer.score_frame(pd.DataFrame(merged))  # one frame, one forward pass
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return [self._item(scores, s, n) for s, n in zip(starts, sizes)]

    def _item(self, scores: dict[str, Any], start: int, n: int) -> dict[str, Any]:
        item: dict[str, Any] = {"model": self.scorer.ref}
        for t in TASKS:
            v = scores[t]
            item[t] = v[start:start + n].tolist() if v is not None else None
        return item

    def model(self) -> str:
        return self.scorer.ref


def _rows(cols: dict[str, list[Any]]) -> int:
    return len(next(iter(cols.values()))) if cols else 0
