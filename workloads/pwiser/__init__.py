"""pwiser: CTR/CVR multi-task ranking with the PWiseR pairwise loss (Durmus et al.)."""

from pathlib import Path

from adray.workload import TorchSpec, Workload

from .config import PWiseRConfig
from .data import IMPORTERS, load_split, make_data, model_meta
from .evaluate import evaluate, evaluate_methods
from .model import build_model
from .train import loss

WORKLOAD = Workload(
    name="pwiser",
    description="pCTR/pCVR ranking (SharedBottom, MMoE, PLE, DNN, MaskNet) trained with BCE + lambda*PWiseR",
    config_cls=PWiseRConfig,
    configs_dir=Path(__file__).parent / "configs",
    make_data=make_data,
    importers=IMPORTERS,
    torch=TorchSpec(
        load_split=load_split,
        model_meta=model_meta,
        build_model=build_model,
        loss=loss,
        evaluate=evaluate,
        objective="auc_ctr",
        mode="max",
    ),
    evaluate_methods=evaluate_methods,
)

__all__ = ["WORKLOAD", "PWiseRConfig"]
