"""pwiser: CTR/CVR multi-task ranking with the PWiseR pairwise loss (Durmus et al.)."""

from pathlib import Path

from adray.train_torch import TorchSpec, TorchTrainer
from adray.workload import Headline, Workload

from .config import PWiseRConfig
from .data import IMPORTERS, load_split, make_data, model_meta
from .evaluate import eval_metrics, eval_outputs, evaluate, evaluate_methods
from .model import build_model
from .serving import RankingPolicy
from .train import loss, stream_columns, stream_convert

TRAINER = TorchTrainer(TorchSpec(
    load_split=load_split,
    model_meta=model_meta,
    build_model=build_model,
    loss=loss,
    evaluate=evaluate,
    objective="auc_ctr",
    mode="max",
    stream_columns=stream_columns,
    stream_convert=stream_convert,
    eval_outputs=eval_outputs,
    eval_metrics=eval_metrics,
))

WORKLOAD = Workload(
    name="pwiser",
    description="pCTR/pCVR ranking (SharedBottom, MMoE, PLE, DNN, MaskNet) trained with BCE + lambda*PWiseR",
    config_cls=PWiseRConfig,
    configs_dir=Path(__file__).parent / "configs",
    trainer=TRAINER,
    load_model=TRAINER.load,
    evaluate=evaluate_methods,
    policy=RankingPolicy,
    headline=Headline(metric="test_auc_ctr", baseline="constant"),
    generator_fields=("rows", "num_users", "num_items", "latent_dim", "ctr", "cvr", "noise_click_share", "affinity_scale",
                      "cvr_affinity", "feature_noise", "val_fraction", "test_fraction", "import_file", "import_format",
                      "keep_leaky"),
    make_data=make_data,
    importers=IMPORTERS,
)

__all__ = ["WORKLOAD", "PWiseRConfig"]
