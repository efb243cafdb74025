"""VAMO against its baselines in the simulator: the shapes of the paper's Table 1, Table 3 and Fig. 4.

    python benchmarks/vamo_table.py train  --seed S [--variants table1,table3,lambda] [--budget-min 9] [--threads 2]
    python benchmarks/vamo_table.py select --seed S [--variants ...] [--grid 1,1.5,2,3,4,6]
    python benchmarks/vamo_table.py eval   --seed S [--groups table1,table3,lambda]
    python benchmarks/vamo_table.py report [--json results/vamo/table.json]
    python benchmarks/vamo_table.py merge --source DIR   (a side run's models into --out's tables)
    (all take --config bench, --set k=v, --out results/vamo; ``train`` and ``eval`` resume)

One simulated dataset (the config's generator fields and data seed, ``--out``/data); every variant
is trained on it with training seed S (``seed`` = S; the data stays the same) and published to the
registry under ``--out``/home as ``vamo-<variant>-s<S>``. ``train`` trains the variants not yet
published, in this process through ``adray.train_torch.fit_in_process`` (the harness's epoch loop
and VAMO step: what ``adray train vamo`` runs on Ray Train workers); after the first, it starts a
variant only while one as long as the longest so far fits in ``--budget-min`` minutes: call it again
to continue. ``select`` chooses each trained variant's return target on the held-out validation
day (``evaluate.choose_target``: the model bids that day at each ``target_return`` of the grid
against the config's ``eval_seeds`` opponent seeds; for each task the target under which its own
metric was best wins) and publishes the variant again with them (``task_targets``;
``vamo-<variant>-s<S>@latest``, the choice in its manifest's
``target_selected`` and in ``select-s<S>.json``); the evaluation days take no part.
``--threads`` pins torch's intra-op threads (recorded in the train log and the model's metrics): a seed gives bit-identical weights only at one thread count, since the thread count changes
float summation order (issue 22: left to the shell's ``OMP_NUM_THREADS`` / core count, two runs of
one seed differed). ``eval`` runs, per group,
``adray eval vamo --model vamo-vamo-s<S>@latest --compare LABEL=vamo-LABEL-s<S>@latest ... --json``
(every model bids in the same fresh simulated days against the same opponents: evaluate.py; STL is
in every group, so each group's Delta m% is against the same STL models) and keeps its ``methods``
in ``eval-s<S>.json``. Each model's metrics there are means over ``eval_days`` fresh days x
``eval_seeds`` opponent seeds (the config's; bench: 3 x 3), with their std over opponent seeds.
``report`` prints mean +- std over the evaluated training seeds of each task's metric, the
AuctionNet score and Delta m% (per seed against that seed's STL; lower is better), the score's std
over opponent seeds (``opp-sd``, mean over training seeds) and writes
Fig. 4 as ``lambda.png``. Groups:

* table1: stl, vanilla, dwa, famo, pcgrad, fairgrad, vamo, and the AuctionNet baselines (pid_budget,
  pid_cpa, online_lp, fixed, random: not trained; their score beside the learned bidders'; STL is
  the single-task decision-transformer baseline);
* table3 (and Fig. 3): vamo_no_val (``weighting=vamo_train``: the total training gradient as the
  alignment target), vamo_no_timesnet (``temporal=none``), vamo_lstm (``temporal=lstm``);
* lambda (Fig. 4): VAMO at lambda = 0.01, 0.1, 10, 100 (lambda = 1 is ``vamo``);
* sweep: vamo_sweep, the validation-day sweep's best configuration (:data:`SWEEP`);
* avg, avg_sharp (not in the paper): VAMO with its gains averaged over steps (``gain_avg`` 0.99), at
  lambda 1 and 0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from adray.config import load_config, parse_set
from workloads.vamo import WORKLOAD
from workloads.vamo.config import TASKS, VamoConfig
from workloads.vamo.evaluate import delta_m

TABLE1 = {"stl": {"weighting": "stl"}, "vanilla": {"weighting": "vanilla"}, "dwa": {"weighting": "dwa"},
          "famo": {"weighting": "famo"}, "pcgrad": {"weighting": "pcgrad"}, "fairgrad": {"weighting": "fairgrad"},
          "vamo": {"weighting": "vamo"}}
TABLE3 = {"vamo_no_val": {"weighting": "vamo_train"}, "vamo_no_timesnet": {"temporal": "none"},
          "vamo_lstm": {"temporal": "lstm"}}
LAMBDAS = (0.01, 0.1, 10.0, 100.0)
LAMBDA = {f"lambda_{lam:g}": {"weighting": "vamo", "lam": lam} for lam in LAMBDAS}
SWEEP = {"vamo_sweep": {"weighting": "vamo", "lam": 1.5676677195506077, "hidden": 16, "context": 8, "epochs": 6}}
"""The best trial of the validation-day sweep (README: ``adray tune vamo --space
tune_spaces/vamo-valday.yaml``, training seed 0), trained on every seed: does its choice hold?"""
AVG = {"vamo_avg": {"weighting": "vamo", "gain_avg": 0.99}}
"""Issue 22, not in the paper: VAMO's weights from its gains averaged over about 100 steps
(``gain_avg``), not from one step's training batch against one validation batch."""
AVG_SHARP = {"vamo_avg_lambda_0.1": {"weighting": "vamo", "gain_avg": 0.99, "lam": 0.1}}
"""With averaged gains, lambda 1 left the weights within 0.035 of 1/3 (the tasks' averaged scaled
gains differ by a small part of their scale): the paper's lambda 0.1 lets them act."""
GROUPS = {"table1": TABLE1, "table3": TABLE3, "lambda": LAMBDA, "sweep": SWEEP, "avg": AVG, "avg_sharp": AVG_SHARP}
VARIANTS = {label: over for group in GROUPS.values() for label, over in group.items()}
BASELINES = ("pid_budget", "pid_cpa", "online_lp", "fixed", "random")
COLUMNS = (*TASKS, "score", "delta_m")


def model_name(variant: str, seed: int) -> str:
    return f"vamo-{variant.replace('_', '-').replace('.', 'p')}-s{seed}"


def setup(args: argparse.Namespace) -> tuple[VamoConfig, Path]:
    out = Path(args.out)
    os.environ["ADRAY_HOME"] = str((out / "home").absolute())
    os.environ.pop("ADRAY_REGISTRY", None)
    data = out / "data"
    cfg = load_config(VamoConfig, args.config, WORKLOAD.configs_dir, {**parse_set(args.set), "data": str(data)})
    if not (data / "manifest.json").is_file():
        t0 = time.perf_counter()
        WORKLOAD.make_data(cfg, data)
        print(f"data: {time.perf_counter() - t0:.1f} s -> {data}", flush=True)
    return cfg, data


def variants(names: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in names.split(","):
        out.update(GROUPS[name] if name in GROUPS else {name: VARIANTS[name]})
    return out


def train(args: argparse.Namespace) -> None:
    import torch

    from adray.data import read_manifest
    from adray.models import finish_model_dir
    from adray.registry import Registry, RegistryError
    from workloads.vamo.train import fit, save_model

    cfg, data = setup(args)
    torch.set_num_threads(args.threads)  # part of what a seed reproduces: the summation order
    reg, t_start = Registry(), time.perf_counter()
    log = Path(args.out) / "train-log.jsonl"
    past = [json.loads(line)["train_s"] for line in log.read_text().splitlines()] if log.is_file() else []
    longest = max(past, default=0.0)  # a variant is started only if one as long as the longest fits
    trained = 0
    for label, over in variants(args.variants).items():
        name = model_name(label, args.seed)
        try:
            reg.get(f"{name}@latest")
            continue  # trained by an earlier call
        except RegistryError:
            pass
        if trained and time.perf_counter() - t_start + longest > args.budget_min * 60:
            print(f"{args.budget_min} min budget: call again to train {name} and the rest", flush=True)
            return
        vcfg = cfg.override({**over, "seed": args.seed})
        load0, t0 = os.getloadavg()[0], time.perf_counter()
        model, history = fit(vcfg, data)
        train_s = time.perf_counter() - t0
        longest, trained = max(longest, train_s), trained + 1
        with tempfile.TemporaryDirectory() as tmp:
            save_model(model, Path(tmp))
            finish_model_dir(Path(tmp), vcfg, model.meta)
            runs: dict[int, list[float]] = {}  # STL: one run per task
            for h in history:
                runs.setdefault(int(h.get("task", -1)), []).append(h["val_loss"])
            best = float(np.mean([min(v) for v in runs.values()]))
            mv = reg.publish(name, tmp, {"workload": "vamo", "config": vcfg.to_dict(),
                                         "dataset": str(data.absolute()),
                                         "dataset_hash": read_manifest(data)["content_hash"],
                                         "metrics": {"val_loss": best, "train_s": train_s,
                                                     "torch_threads": args.threads}})
        row = {"variant": label, "seed": args.seed, "ref": mv.ref, "train_s": train_s, "best_val_loss": best,
               "epochs": vcfg.epochs, "torch_threads": args.threads, "loadavg_1m_before": load0,
               "loadavg_1m_after": os.getloadavg()[0],
               # the last epoch's task weights, gains and gradient cosines (do the tasks conflict?)
               "last_epoch": {k: v for k, v in history[-1].items()
                              if k.startswith(("train_w_", "train_m_", "train_cos", "train_conflict"))}}
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{mv.ref}: {train_s:.0f} s, best val loss {best:.4f}, load {load0:.1f}", flush=True)


RULE = "per-task"
"""What ``select`` records as its rule; a selection made under another rule is made again."""


def select(args: argparse.Namespace) -> None:
    """Each trained variant of the seed: its tasks' return targets chosen on the validation day
    (evaluate.choose_target), published as the variant's next version (same network,
    ``task_targets`` set, the choice in the manifest's ``target_selected``), which ``eval`` then bids
    with; then that version bids the validation day once more (its ``val_day_score``)."""
    import shutil

    from adray.config import save_config
    from adray.models import CONFIG_FILE, load_model
    from adray.registry import Registry, RegistryError
    from workloads.vamo.data import lp_table
    from workloads.vamo.evaluate import TARGET_GRID, at_target, market_of, select_targets

    cfg, data = setup(args)
    grid = [float(x) for x in args.grid.split(",")] if args.grid else list(TARGET_GRID)
    lp = lp_table(*market_of(cfg, data))  # the market's, made once for every model and target
    reg, path = Registry(), Path(args.out) / f"select-s{args.seed}.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    for label in variants(args.variants):
        name = model_name(label, args.seed)
        try:
            mv = reg.get(f"{name}@latest")
        except RegistryError:
            print(f"{name}: not trained yet, skipped", flush=True)
            continue
        picked = mv.manifest.get("target_selected")
        if picked and picked.get("rule") == RULE:
            done[label] = picked
            continue
        if picked:  # chosen under another rule: start again from the trained version
            mv = reg.get(picked["from"])
        loaded = load_model(mv.ref, reg)
        t0 = time.perf_counter()
        picked = select_targets(loaded.model.cfg, data, loaded.model, grid, lp)
        chosen = at_target(loaded.model, tuple(picked["task_targets"]))
        record = {"rule": RULE, "from": mv.ref, **picked, "select_s": time.perf_counter() - t0}
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(loaded.path, tmp, dirs_exist_ok=True)
            save_config(chosen.cfg, Path(tmp) / CONFIG_FILE)
            keep = {k: mv.manifest[k] for k in ("workload", "dataset", "dataset_hash", "metrics") if k in mv.manifest}
            new = reg.publish(name, tmp, {**keep, "config": chosen.cfg.to_dict(), "target_selected": record})
        done[label] = record
        path.write_text(json.dumps(done, indent=1))
        grid_text = "; ".join(f"{t}: " + "/".join(f"{m[k]:.0f}" for k in TASKS) for t, m in record["grid"].items())
        print(f"{new.ref}: task_targets {record['task_targets']} -> validation day {record['validation_day']} score "
              f"{record['val_day']['score']:.1f} (grid, {'/'.join(TASKS)}: {grid_text}; {record['select_s']:.0f} s)", flush=True)
    path.write_text(json.dumps(done, indent=1))


def published(ref: str) -> bool:
    from adray.registry import Registry, RegistryError

    try:
        Registry().get(ref)
        return True
    except RegistryError:
        return False


def evaluate(args: argparse.Namespace) -> None:
    setup(args)
    adray = str(Path(sys.executable).with_name("adray"))
    path = Path(args.out) / f"eval-s{args.seed}.json"
    done = json.loads(path.read_text()) if path.is_file() else {"methods": {}, "wall_s": {}}
    for group in args.groups.split(","):
        if group in done["wall_s"]:
            continue
        labels = [v for v in ("stl", *GROUPS[group]) if v != "vamo"]  # vamo: the --model
        missing = [v for v in labels if not published(f"{model_name(v, args.seed)}@latest")]
        if missing:  # a group evaluated in part: the variants trained so far (the report shows which)
            print(f"seed {args.seed} {group}: not trained, left out: {', '.join(missing)}", flush=True)
            labels = [v for v in labels if v not in missing]
        # the --model leads the bid: VAMO, else the first trained variant (bid once, under its label)
        lead = "vamo" if published(f"{model_name('vamo', args.seed)}@latest") else next(iter(labels), None)
        if lead is None:
            continue
        cmd = [adray, "eval", "vamo", "--model", f"{model_name(lead, args.seed)}@latest", "--json"]
        for label in dict.fromkeys(labels):
            if label != lead:
                cmd += ["--compare", f"{label}={model_name(label, args.seed)}@latest"]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        methods = json.loads(out.stdout.strip().splitlines()[-1])["methods"]
        methods[lead] = methods.pop("vamo")  # the --model answers under the workload's name
        if lead == "stl":  # the eval saw it as "vamo", so it had no "stl" to measure Delta m% against
            for row in methods.values():
                row["delta_m"] = delta_m(row, methods["stl"])
        keep = set(GROUPS[group]) | {"stl"} | ({"vamo", *BASELINES} if group == "table1" else set())
        done["methods"].update({k: v for k, v in methods.items() if k in keep})
        done["wall_s"][group] = time.perf_counter() - t0
        done.setdefault("commands", {})[group] = " ".join(cmd[1:])
        path.write_text(json.dumps(done, indent=1))
        print(f"seed {args.seed} {group}: {done['wall_s'][group]:.0f} s -> {path}", flush=True)


def merge(args: argparse.Namespace) -> None:
    """Add a side run's models (``--source``: its own home, its STL trained again on the same data)
    to ``--out``'s evaluations, selections and train log, so that ``report`` pairs them with the
    models there. Refused unless the side run's STL chose the same targets and bid to the same
    figures as ``--out``'s, i.e. the same days, opponents and STL (training is deterministic per
    seed at a thread count); Delta m% is taken against that STL."""
    src, dst = Path(args.source), Path(args.out)
    files = sorted(src.glob("eval-s*.json"))
    if not files:
        sys.exit(f"--source {src}: no eval-s*.json there (run `eval --out {src}` first)")
    writes: list[tuple[Path, dict]] = []  # every seed is checked before anything is written
    for f in files:
        if not (dst / f.name).is_file():
            sys.exit(f"{dst / f.name}: missing; merge adds to a seed's evaluation, it does not start one")
        new, old = json.loads(f.read_text()), json.loads((dst / f.name).read_text())
        stl = old["methods"]["stl"]
        differ = [k for k in (*TASKS, "score") if new["methods"]["stl"][k] != stl[k]]
        if differ:
            sys.exit(f"{f}: STL's {', '.join(differ)} differ from {dst / f.name}'s: not the same experiment")
        sel_new = json.loads((src / f.name.replace("eval", "select")).read_text())
        sel_path = dst / f.name.replace("eval", "select")
        sel_old = json.loads(sel_path.read_text())
        if sel_new["stl"]["task_targets"] != sel_old["stl"]["task_targets"]:
            sys.exit(f"{src}: STL chose other targets than in {sel_path}: not the same experiment")
        added = {k: {**v, "delta_m": delta_m(v, stl)} for k, v in new["methods"].items() if k != "stl"}
        old["methods"].update(added)
        old["wall_s"].update(new["wall_s"])
        old.setdefault("commands", {}).update(new.get("commands", {}))
        sel_old.update({k: v for k, v in sel_new.items() if k in added})
        writes += [(dst / f.name, old), (sel_path, sel_old)]
    for path, data in writes:
        path.write_text(json.dumps(data, indent=1))
        print(f"{path}: merged", flush=True)
    log = dst / "train-log.jsonl"
    have = {(r["variant"], r["seed"]) for r in map(json.loads, log.read_text().splitlines())}
    rows = [r for r in map(json.loads, (src / "train-log.jsonl").read_text().splitlines())
            if (r["variant"], r["seed"]) not in have]
    with log.open("a") as out:
        out.writelines(json.dumps(r) + "\n" for r in rows)


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per method and metric: the mean over training seeds, ``<metric>_std`` the std over training
    seeds and ``<metric>_opp_std`` the mean over training seeds of the evaluation's std over
    opponent seeds (its ``<metric>_std``)."""
    out: dict[str, dict[str, float]] = {}
    for name in per_seed[0]:
        runs = [t[name] for t in per_seed if name in t]
        for k in runs[0]:
            if k.endswith("_std"):
                continue
            vals = [r[k] for r in runs if k in r]
            out.setdefault(name, {})[k] = float(np.mean(vals))
            out[name][f"{k}_std"] = float(np.std(vals))
            opp = [r[f"{k}_std"] for r in runs if f"{k}_std" in r]
            if opp:
                out[name][f"{k}_opp_std"] = float(np.mean(opp))
        out[name]["seeds"] = len(runs)
    return out


def show(title: str, table: dict[str, dict[str, float]], rows: list[str]) -> None:
    print(f"\n{title}\n{'method':18s}" + "".join(f"{c:>20s}" for c in COLUMNS) + "  score opp-sd  seeds")
    for r in rows:
        if r in table:
            cells = [f"{table[r].get(c, float('nan')):.1f} +- {table[r].get(c + '_std', 0):.1f}" for c in COLUMNS]
            opp = table[r].get("score_opp_std", float("nan"))
            print(f"{r:18s}" + "".join(f"{c:>20s}" for c in cells) + f"  {opp:12.1f}  {int(table[r]['seeds'])}")


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks on ties)."""
    import pandas as pd

    return float(pd.Series(a).rank().corr(pd.Series(b).rank()))


def selection_signals(out: Path, files: list[Path]) -> dict[str, Any]:
    """How well each selection signal ranks the trained models (variant x seed) the way the
    evaluation days do: Spearman's rho of the evaluation score against -(best validation loss)
    (the logged-data signal training selects epochs with) and against the validation-day score at
    the chosen target (``select``); and the targets chosen."""
    log = out / "train-log.jsonl"
    losses = {(r["variant"], r["seed"]): r["best_val_loss"]
              for r in map(json.loads, log.read_text().splitlines())} if log.is_file() else {}
    rows = []
    for f in files:
        seed = int(f.stem.split("-s")[-1])
        chosen = json.loads((out / f"select-s{seed}.json").read_text()) if (out / f"select-s{seed}.json").is_file() else {}
        for variant, m in json.loads(f.read_text())["methods"].items():
            if (variant, seed) in losses:
                pick = chosen.get(variant)
                rows.append({"variant": variant, "seed": seed, "score": m["score"], "val_loss": losses[variant, seed],
                             "task_targets": pick["task_targets"] if pick else None,
                             "val_day_score": pick["val_day"]["score"] if pick else None})
    out_: dict[str, Any] = {"models": rows}
    if len(rows) >= 3:
        out_["rho_score_vs_neg_val_loss"] = spearman([r["score"] for r in rows], [-r["val_loss"] for r in rows])
        picked = [r for r in rows if r["val_day_score"] is not None]
        if len(picked) >= 3:
            out_["rho_score_vs_val_day_score"] = spearman([r["score"] for r in picked],
                                                          [r["val_day_score"] for r in picked])
    print("\nSelection signals (models = variant x seed):")
    for r in rows:
        print(f"  {r['variant']:12s} s{r['seed']}  eval score {r['score']:7.1f}  best val loss {r['val_loss']:.4f}"
              + (f"  targets {r['task_targets']}, validation day {r['val_day_score']:.1f}" if r["task_targets"] else ""))
    for k in ("rho_score_vs_neg_val_loss", "rho_score_vs_val_day_score"):
        if k in out_:
            print(f"  {k}: {out_[k]:+.2f}")
    return out_


def paired_against_vamo(per_seed: list[dict[str, dict[str, float]]], seeds: list[str]) -> dict[str, Any]:
    """Per method, its Delta m% and score on each training seed and the paired difference VAMO minus
    it (the same seed's data order, initialisation and STL: the seed spread they share cancels):
    mean, std over seeds, and on how many seeds VAMO is better (lower Delta m%, higher score)."""
    out: dict[str, Any] = {}
    have = [(s, t) for s, t in zip(seeds, per_seed, strict=True) if "vamo" in t]
    print("\nPer training seed, and VAMO minus each method on the same seed (Delta m%: lower is better):")
    for name in sorted({m for _, t in have for m in t} - {"vamo"}):
        rows = [(s, t[name], t["vamo"]) for s, t in have if name in t]  # names come from have: never empty
        d_dm = [v["delta_m"] - m["delta_m"] for _, m, v in rows]
        d_sc = [v["score"] - m["score"] for _, m, v in rows]
        out[name] = {"seeds": [s for s, _, _ in rows], "delta_m": [m["delta_m"] for _, m, _ in rows],
                     "score": [m["score"] for _, m, _ in rows],
                     "vamo_minus_delta_m": float(np.mean(d_dm)), "vamo_minus_delta_m_std": float(np.std(d_dm)),
                     "vamo_better_delta_m": int(sum(d < 0 for d in d_dm)),
                     "vamo_minus_score": float(np.mean(d_sc)), "vamo_minus_score_std": float(np.std(d_sc)),
                     "vamo_better_score": int(sum(d > 0 for d in d_sc)), "n": len(rows)}
        r = out[name]
        print(f"  {name:18s} Delta m% " + ", ".join(f"{x:+.1f}" for x in r["delta_m"])
              + f"; VAMO minus: {r['vamo_minus_delta_m']:+.1f} +- {r['vamo_minus_delta_m_std']:.1f} "
              f"(VAMO better on {r['vamo_better_delta_m']}/{r['n']}); score VAMO minus: "
              f"{r['vamo_minus_score']:+.1f} +- {r['vamo_minus_score_std']:.1f} "
              f"(better on {r['vamo_better_score']}/{r['n']})")
    vamo = [t["vamo"] for _, t in have]
    out["vamo"] = {"seeds": [s for s, _ in have], "delta_m": [v["delta_m"] for v in vamo],
                   "score": [v["score"] for v in vamo]}
    print("  vamo               Delta m% " + ", ".join(f"{v['delta_m']:+.1f}" for v in vamo)
          + "; score " + ", ".join(f"{v['score']:.1f}" for v in vamo))
    return out


def report(args: argparse.Namespace) -> None:
    out = Path(args.out)
    files = sorted(out.glob("eval-s*.json"))
    per_seed = [json.loads(f.read_text())["methods"] for f in files]
    if not per_seed:
        sys.exit(f"no {out}/eval-s*.json yet: run `train` and `eval` first")
    table = summarise(per_seed)
    show("Table 1 (per-task metric, AuctionNet score, Delta m% vs STL; mean +- std over seeds)", table,
         [*TABLE1, *BASELINES])
    show("Table 3 / Fig. 3 (ablations)", table, [*TABLE3, "vamo"])
    show("The validation-day sweep's choice on every seed", table, [*SWEEP, "vamo"])
    show("Gains averaged over steps (gain_avg; not in the paper)", table, [*AVG, *AVG_SHARP, "vanilla", "vamo"])
    lams = sorted([*LAMBDAS, 1.0])
    rows = {lam: ("vamo" if lam == 1.0 else f"lambda_{lam:g}") for lam in lams}
    have = [lam for lam in lams if rows[lam] in table]
    # the curve (and Vanilla beside it) on the seeds that have every lambda, so its points compare;
    # every seed when none has them all
    common = [m for m in per_seed if all(rows[lam] in m for lam in have)] or per_seed
    curve = summarise(common)
    show(f"Fig. 4 (lambda; lambda = 1 is vamo; the {len(common)} seed(s) with every lambda)", curve,
         [*rows.values(), "vanilla"])
    if have:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        y = [curve[rows[lam]]["delta_m"] for lam in have]
        e = [curve[rows[lam]]["delta_m_std"] for lam in have]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.errorbar(have, y, yerr=e, marker="o", capsize=3, label="VAMO")
        for name, style in (("vanilla", "--"), ("stl", ":")):
            if name in curve:
                ax.axhline(curve[name]["delta_m"], ls=style, color="grey", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("lambda (temperature of softmax(m / lambda))")
        ax.set_ylabel("Delta m% vs STL (lower is better)")
        ax.set_title(f"Fig. 4 shape: mean +- std over {len(common)} seed(s)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "lambda.png", dpi=120)
        print(f"\nwrote {out / 'lambda.png'}")
    signals = selection_signals(out, files)
    paired = paired_against_vamo(per_seed, [f.stem for f in files])
    result = {"seeds": [f.stem for f in files], "methods": table, "selection": signals, "paired": paired}
    Path(args.json or out / "table.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json or out / 'table.json'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("train", "select", "eval", "report", "merge"))
    ap.add_argument("--config", default="bench")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", default="results/vamo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="table1,table3,lambda")
    ap.add_argument("--groups", default="table1,table3,lambda")
    ap.add_argument("--budget-min", type=float, default=9.0)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch intra-op threads for train (2: torch's default on 2 cores, what vamo-vamo-s0@v0001 was trained with)")
    ap.add_argument("--json", default="")
    ap.add_argument("--grid", default="", help="select: the target_return values bid on the validation day "
                                               "(default: evaluate.TARGET_GRID)")
    ap.add_argument("--source", default="", help="merge: the --out of a side run whose STL was trained again")
    args = ap.parse_args()
    {"train": train, "select": select, "eval": evaluate, "report": report, "merge": merge}[args.command](args)


if __name__ == "__main__":
    main()
