"""The DRL-PUT evaluation table, off-policy estimates vs truth, and the personalisation figure.

    python benchmarks/drlput_eval.py [--config default] [--set k=v ...] [--train-seeds 3]
                                     [--json out.json] [--png personalisation.png]

One logged dataset (the config's behaviour policy and seed); per training seed, REINFORCE and
actor-critic are trained on it (``workloads/drlput/train.py``) and evaluated with
``workloads.drlput.evaluate``: the true simulated reward, CTR, long-CTR, CVR and revenue on fresh
requests, and for the learned policies Diversity (6.1), Relative_Gain (6.2) and IPS/SNIPS/DR on
the ``test`` logs (``test_*``), beside uniform, the best fixed action and the per-request oracle.
Each model is the iteration its trainer kept by SNIPS on the ``val`` logs (``selection``; no
simulator truth; ``training`` in the JSON: the kept iteration, its ``val_snips`` and
``test_snips``). Mean ± std over training seeds for the learned policies, over evaluation seeds
for the baselines. OPE vs truth: each ``test`` estimate's relative error against the policy's
true simulated reward. The figure (Sec. 6.3): mean chosen w_click, w_long, w_conv and reserve per
quintile of the user's historical CTR, CVR and spend per impression, for the REINFORCE model of the
first seed and for the state oracle (the best action for the user's latent propensities).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from workloads.drlput.actions import ActionSpace
from workloads.drlput.config import PARAMS, DRLPUTConfig
from workloads.drlput.evaluate import action_probs, evaluate
from workloads.drlput.sim import make_requests, observe
from workloads.drlput.study import config, ensure_data, mean_std, train, write_json
from workloads.drlput.truth import state_oracle_actions

SHOW = ("reward", "ctr", "long_ctr", "cvr", "revenue", "test_diversity", "test_relative_gain", "test_ips",
        "test_snips", "test_dr")
OPE = ("test_ips", "test_snips", "test_dr")
LEARNED = ("reinforce", "actor_critic")
BUCKETS = ("hist_ctr", "hist_cvr", "hist_spend")


def personalisation(cfg: DRLPUTConfig, model, png: Path, n: int = 4000) -> dict:  # noqa: ANN001
    """Mean chosen parameters per quintile of each BUCKETS feature (model and state oracle) -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    space = ActionSpace(cfg.action)
    req = make_requests(cfg.sim, n, 4242)
    chosen = {"drlput": space.values[action_probs(model, observe(req)).argmax(1)],
              "state oracle": space.values[state_oracle_actions(cfg, req, space, 8, 1)]}
    fig, axes = plt.subplots(len(BUCKETS), len(PARAMS), figsize=(14, 9))
    table: dict = {}
    for i, feat in enumerate(BUCKETS):
        x = req.state[feat]
        edges = np.quantile(x, [0.2, 0.4, 0.6, 0.8])
        bucket = np.digitize(x, edges)
        for name, vals in chosen.items():
            means = np.array([[vals[bucket == b, j].mean() for j in range(len(PARAMS))] for b in range(5)])
            table[f"{name}:{feat}"] = means.round(4).tolist()
            for j, p in enumerate(PARAMS):
                axes[i, j].plot(range(1, 6), means[:, j], marker="o", label=name)
                axes[i, j].set_title(f"{p} by {feat} quintile", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--train-seeds", type=int, default=3)
    ap.add_argument("--data-root", type=Path, default=None, help="where logs are generated (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures as one JSON line to this file")
    ap.add_argument("--png", type=Path, default=None, help="the personalisation figure")
    args = ap.parse_args()
    t0 = time.perf_counter()
    base = config(args.config, args.set)
    work = Path(tempfile.mkdtemp(prefix="drlput-eval-"))
    data = ensure_data(base, args.data_root or work)
    rows: dict[str, list[dict[str, float]]] = {}
    train_stats: dict[str, list[dict[str, float]]] = {m: [] for m in LEARNED}
    first = None
    for s in range(args.train_seeds):
        models = {}
        for algo in LEARNED:
            cfg = base.override({"seed": base.seed + s, "algorithm": algo})
            models[algo], metrics = train(cfg, data, work / f"{algo}-{s}")
            train_stats[algo].append({k: metrics[k] for k in ("best_iteration", "samples_per_s", "val_snips",
                                                              "test_snips")})
        first = first or models["reinforce"]
        table = evaluate(base, data, models["reinforce"], {"actor_critic": models["actor_critic"]})
        table["reinforce"] = table.pop("drlput")
        for m, r in table.items():
            rows.setdefault(m, []).append(r)
    # learned policies: mean ± std over training seeds; baselines (the same every seed): ± over eval seeds
    out = {m: mean_std([{k: v for k, v in x.items() if not k.endswith("_std")} for x in r]) if m in LEARNED
           else r[0] for m, r in rows.items()}
    ope_err = {m: {e: mean_std([{"x": r[e] / r["reward"] - 1} for r in rows[m]])["x"] for e in OPE} for m in LEARNED}
    result = {"config": args.config, "set": args.set, "train_seeds": args.train_seeds, "methods": out,
              "ope_relative_error": ope_err, "training": {m: mean_std(v) for m, v in train_stats.items()},
              "chosen_iterations": {m: [int(x["best_iteration"]) for x in v] for m, v in train_stats.items()}}
    if args.png:
        result["personalisation"] = personalisation(base, first, args.png)
    result["elapsed_s"] = time.perf_counter() - t0
    print(f"{'method':13s}" + "".join(f"{k.removeprefix('test_'):>17s}" for k in SHOW) + "   (OPE etc.: test logs)")
    for m in (*LEARNED, "uniform", "best_fixed", "oracle"):
        r = out[m]
        print(f"{m:13s}" + "".join(f"{r[k]:>9.4f} ±{r[k + '_std']:.4f}" if k in r else f"{'':>17s}" for k in SHOW))
    for m in LEARNED:
        print(f"OPE vs truth ({m}): " + ", ".join(f"{e} {100 * v:+.1f}%" for e, v in ope_err[m].items())
              + f"; iteration kept (selection: {base.selection}) per seed: {result['chosen_iterations'][m]}")
    print(f"({result['elapsed_s']:.0f}s; logs {data})")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
