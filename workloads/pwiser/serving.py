"""The ranking policy: candidate ads -> pCTR, pCVR, pCTCVR (``POST /v1/rank``).

One request is a list of candidates; its schema is generated from the model's FeatureMap, so a
missing or mistyped feature is a 422 naming ``candidates.<i>.<feature>`` and the OpenAPI page lists
the exact features. Scoring: candidates -> ``FeatureMap.arrays`` -> ``model(x_cat, x_num)`` ->
probabilities; one forward pass per request, so a request's scores never depend on other requests.
A categorical id outside the vocabulary (negative ones included) is scored as the unknown id 0, as
in training, and counted per feature in the answer's ``out_of_vocab``; an id past int64 or a
numeric feature past float32 is a 422 (``adray.bounds``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydantic
import torch

from adray.bounds import category_id, feature
from adray.data import FeatureMap, read_dataset
from adray.data.features import encode_records
from adray.workload import Policy

TASKS = ("ctr", "cvr", "ctcvr")


class AdScore(pydantic.BaseModel):
    ad_id: str
    pctr: float
    pcvr: float | None = pydantic.Field(None, description="null for single-task (CTR-only) models")
    pctcvr: float | None = pydantic.Field(None, description="null for single-task (CTR-only) models")


class RankResponse(pydantic.BaseModel):
    request_id: str | None = None
    model: str = pydantic.Field(description="name@version that scored this request")
    scores: list[AdScore] = pydantic.Field(description="one per candidate, in request order")
    out_of_vocab: dict[str, int] = pydantic.Field(
        default_factory=dict, description="per categorical feature, the candidates whose id was outside the "
                                          "vocabulary (negative included) and was scored as the unknown id 0; "
                                          "features with none are left out ({}: none)")


def candidate_schema(fm: FeatureMap) -> type[pydantic.BaseModel]:
    """A pydantic model with ``ad_id`` plus one required field per feature of ``fm``."""
    fields: dict[str, Any] = {"ad_id": (str, pydantic.Field(description="the candidate ad"))}
    for f in fm.categorical:
        fields[f.name] = (category_id(f"categorical id: [0, {f.vocab_size}) is the vocabulary; any other int64 "
                                      "(negative included) is scored as the unknown id 0 and counted "
                                      "(out_of_vocab)"), ...)
    for name in fm.numeric:
        fields[name] = (feature("numeric feature (float32)"), ...)
    return pydantic.create_model("Candidate", __config__=pydantic.ConfigDict(extra="forbid"), **fields)


class RankingPolicy(Policy):
    """Scores candidate ads with a published pwiser model."""

    route = "rank"
    summary = "pCTR / pCVR / pCTCVR of candidate ads"

    def __init__(self, model: Any, cfg: Any, meta: dict[str, Any], ref: str) -> None:
        super().__init__(model, cfg, meta, ref)
        self.feature_map = FeatureMap.from_dict(meta["feature_map"])
        self.columns = self.feature_map.categorical_names + list(self.feature_map.numeric)

    @classmethod
    def request_schema(cls, meta: dict[str, Any], max_items: int) -> type[pydantic.BaseModel]:
        candidate = candidate_schema(FeatureMap.from_dict(meta["feature_map"]))
        return pydantic.create_model(
            "RankRequest",
            __config__=pydantic.ConfigDict(extra="forbid"),
            request_id=(str | None, None),
            candidates=(list[candidate],  # type: ignore[valid-type]
                        pydantic.Field(max_length=max_items, description=f"at most {max_items} ads")),
        )

    @classmethod
    def response_schema(cls, meta: dict[str, Any]) -> type[pydantic.BaseModel]:
        return RankResponse

    def score_arrays(self, x_cat: np.ndarray, x_num: np.ndarray) -> dict[str, np.ndarray | None]:
        """``x_cat`` (B, C) int64, ``x_num`` (B, D) float32 -> ``{task: (B,) float32 or None}``."""
        with torch.inference_mode():
            out = self.model(torch.from_numpy(x_cat), torch.from_numpy(x_num))
        return {t: (out[t].numpy().astype(np.float32) if t in out else None) for t in TASKS}

    def score_frame(self, df: pd.DataFrame, where: str = "request") -> dict[str, np.ndarray | None]:
        arrays = self.feature_map.arrays(df, where=where, with_labels=False)
        return self.score_arrays(arrays["x_cat"], arrays["x_num"])

    def decide(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One forward pass over the candidates of all ``requests`` (Serve passes one at a time)."""
        cands = [c for r in requests for c in r["candidates"]]
        if not cands:
            return [{"request_id": r.get("request_id"), "model": self.ref, "scores": [], "out_of_vocab": {}}
                    for r in requests]
        arrays = encode_records(self.feature_map, cands)  # the arrays FeatureMap.arrays would make
        scores = {t: (v.tolist() if v is not None else None)
                  for t, v in self.score_arrays(arrays["x_cat"], arrays["x_num"]).items()}
        out, start = [], 0
        for r in requests:
            rows = []
            for i, c in enumerate(r["candidates"], start):
                rows.append({"ad_id": c["ad_id"], **{f"p{t}": (v[i] if v is not None else None) for t, v in scores.items()}})
            out.append({"request_id": r.get("request_id"), "model": self.ref, "scores": rows,
                        "out_of_vocab": self.out_of_vocab(r["candidates"])})
            start += len(r["candidates"])
        return out

    def out_of_vocab(self, candidates: Sequence[dict[str, Any]]) -> dict[str, int]:
        """Per categorical feature, the candidates whose id the model scores as unknown (0); only
        features with any."""
        names = self.feature_map.categorical_names
        if not names or not candidates:
            return {}
        ids = np.array([[c[n] for n in names] for c in candidates], dtype=np.int64)  # (N, C)
        return {k: n for k, n in self.feature_map.out_of_vocab(ids).items() if n}

    @classmethod
    def sample_requests(cls, cfg: Any, data_dir: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
        """``n`` requests of 1-20 candidates drawn from the test split's rows."""
        fm = FeatureMap.from_dict(read_dataset(data_dir).meta["feature_map"])
        df = read_dataset(data_dir).read("test", columns=fm.categorical_names + list(fm.numeric))
        rng = np.random.default_rng(seed)
        out = []
        for i in range(n):
            rows = df.iloc[rng.choice(len(df), size=int(rng.integers(1, 21)), replace=True)]
            cands = [{"ad_id": f"r{i}-a{j}", **{k: (int(v) if k in fm.categorical_names else float(v))
                                                 for k, v in row.items()}}
                     for j, (_, row) in enumerate(rows.iterrows())]
            out.append({"request_id": f"r{i}", "candidates": cands})
        return out
