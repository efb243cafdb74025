"""The PWiseR training loss: ``Loss = BCE + lambda * PWiseR`` (Durmus et al., Eq. 1-2).

Eq. 2, on the CTR predictions p = sigmoid(ctr logit) of one batch, with the three groups of Table 1:
click-without-conversion (N samples, index i), conversion (M samples, index j) and no-click
(K samples, index k)::

    PWiseR = 1/N sum_i sum_j  d(p_j < p_i + m1) (p_i - p_j + m1)^2        # conversion above click-only
           + 1/K sum_k sum_j  d(p_j < p_k + m2) (p_k - p_j + m2)^2        # conversion above no-click

Differences from the printed paper, all deliberate:

* The paper's prose names N, K, M as (click-only, conversion, no-click), but its Eq. 2 sums j over
  the conversion samples up to M and k over the no-click ones up to K. We follow the equation:
  N = click-only, M = conversions, K = no-clicks, and normalise exactly as written: 1/N and 1/K,
  *not* divided by M, so the term grows with the number of conversions in the batch.
* The printed indicator is ``d(p_j < p_i - m1)`` (active only when the conversion is below the
  other sample by more than the margin), while the penalty ``(p_i - p_j + m1)^2`` is the usual
  margin hinge. ``margin_form="hinge"`` (default) uses the consistent squared hinge
  ``relu(p_i - p_j + m1)^2``, continuous and active until the conversion leads by m1;
  ``margin_form="literal"`` implements the indicator as printed.
* Empty groups (no conversions, no click-only or no no-click samples in a batch) give 0 for the
  affected term, never NaN. The ``i != j`` of Eq. 2 is automatic: the groups are disjoint.

BCE: on CTR over all impressions, plus (multi-task models) ESMM's CTCVR BCE over all impressions on
``pCTR * pCVR`` against ``click AND conversion``. We chose CTCVR over the entire space rather than
CVR on clicked samples because it trains the CVR tower on every impression (no sample-selection
bias, no starving tower when a batch has few clicks), and because CTCVR is what the paper's
second AUC measures. Single-task models (DNN, MaskNet) get BCE on CTR (+ PWiseR): the paper's STL
setting, where conversions enter only through PWiseR.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from adray.data import FeatureMap

from .config import PWiseRConfig


def pwiser_term(
    p_ctr: torch.Tensor,
    click: torch.Tensor,
    conversion: torch.Tensor,
    m1: float,
    m2: float,
    margin_form: str = "hinge",
) -> torch.Tensor:
    """Eq. 2 on one batch: scalar PWiseR of CTR probabilities ``p_ctr`` (B,), labels (B,) in {0, 1}."""
    conv = conversion > 0.5
    click_only = (click > 0.5) & ~conv
    no_click = (click < 0.5) & ~conv
    p_conv = p_ctr[conv]  # (M,)

    def pairs(p_other: torch.Tensor, margin: float) -> torch.Tensor:
        gap = p_other[:, None] - p_conv[None, :]  # (N or K, M): p_i - p_j
        if margin_form == "hinge":
            return F.relu(gap + margin).square().sum()
        active = (gap > margin).to(gap.dtype)  # printed indicator: p_j < p_i - m
        return (active * (gap + margin).square()).sum()

    n, k = int(click_only.sum()), int(no_click.sum())
    term1 = pairs(p_ctr[click_only], m1) / max(n, 1)  # 0 when N == 0 or M == 0
    term2 = pairs(p_ctr[no_click], m2) / max(k, 1)  # 0 when K == 0 or M == 0
    return term1 + term2


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate on both ends (Maechler 2012); both branches finite."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def ctcvr_bce(ctr_logit: torch.Tensor, cvr_logit: torch.Tensor, y_ctcvr: torch.Tensor) -> torch.Tensor:
    """Mean BCE of ``sigmoid(ctr) * sigmoid(cvr)`` against ``y_ctcvr``, computed in log space."""
    log_p = F.logsigmoid(ctr_logit) + F.logsigmoid(cvr_logit)  # (B,) log pCTCVR
    return -(y_ctcvr * log_p + (1.0 - y_ctcvr) * _log1mexp(log_p)).mean()


def loss(model: Any, batch: dict[str, torch.Tensor], cfg: PWiseRConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """TorchSpec.loss: ``BCE_ctr + cvr_weight * BCE_ctcvr + lam * PWiseR`` (Eq. 1)."""
    z = model.logits(batch["x_cat"], batch["x_num"])
    click, conversion = batch["click"], batch["conversion"]
    bce_ctr = F.binary_cross_entropy_with_logits(z["ctr"], click)
    total = bce_ctr
    stats = {"bce_ctr": float(bce_ctr.detach())}
    if "cvr" in z:
        bce_ctcvr = ctcvr_bce(z["ctr"], z["cvr"], click * conversion)
        total = total + cfg.cvr_weight * bce_ctcvr
        stats["bce_ctcvr"] = float(bce_ctcvr.detach())
    if cfg.loss == "pwiser":
        rank = pwiser_term(torch.sigmoid(z["ctr"]), click, conversion, cfg.m1, cfg.m2, cfg.margin_form)
        total = total + cfg.lam * rank
        stats["pwiser"] = float(rank.detach())
    stats["loss"] = float(total.detach())
    return total, stats


# ----------------------------------------------------------------------------- streaming ingest


def stream_columns(meta: dict[str, Any], cfg: PWiseRConfig) -> list[str]:
    """TorchSpec.stream_columns: the FeatureMap's columns and labels (not ``noise_click``)."""
    fm = FeatureMap.from_dict(meta["feature_map"])
    return [*fm.categorical_names, *fm.numeric, *fm.labels]


def stream_convert(batch: dict[str, np.ndarray], cfg: PWiseRConfig, meta: dict[str, Any], where: str,
                   ) -> dict[str, np.ndarray]:
    """TorchSpec.stream_convert: stored columns -> ``x_cat`` (B, C) int64 (out of vocab -> 0), ``x_num``
    (B, D) float32 and the labels, exactly what ``data.load_split`` (``FeatureMap.arrays``) gives.

    Integer ids, float features and 0/1 labels (what the generator and importers write) take a
    vectorised numpy path; any other dtype goes through ``FeatureMap.arrays`` (its checks name the
    column and row)."""
    fm = FeatureMap.from_dict(meta["feature_map"])
    cats, nums = fm.categorical_names, list(fm.numeric)
    ok = (all(np.issubdtype(batch[c].dtype, np.integer) for c in cats)
          and all(np.issubdtype(batch[c].dtype, np.floating) for c in (*nums, *fm.labels)))
    if not ok:
        arrays = fm.arrays(pd.DataFrame(batch), where=where)
        return {k: arrays[k] for k in ("x_cat", "x_num", *fm.labels)}
    x_cat = np.stack([batch[c] for c in cats], axis=1).astype(np.int64, copy=False)  # (B, C)
    x_cat = np.where((x_cat < 0) | (x_cat >= np.asarray(fm.vocab_sizes, np.int64)), 0, x_cat)
    x_num = (np.stack([batch[c] for c in nums], axis=1).astype(np.float32, copy=False) if nums
             else np.zeros((len(x_cat), 0), np.float32))  # (B, D)
    if not np.isfinite(x_num).all():
        fm.arrays(pd.DataFrame(batch), where=where)  # raises naming the column and row
    out = {"x_cat": x_cat, "x_num": x_num}
    for c in fm.labels:
        y = np.array(batch[c], np.float32)  # a copy: Ray Data's arrays may be read-only views
        if not ((y == 0.0) | (y == 1.0)).all():
            fm.arrays(pd.DataFrame(batch), where=where)  # raises naming the label and row
        out[c] = y
    return out
