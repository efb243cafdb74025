"""Ray Tune + Optuna sweeps over ``tune_spaces/<workload>.yaml``; ASHA; resume; CSV + PNG; publish.

A tune space is data::

    workload: pwiser
    config: smoke                 # named config the trials start from
    metric: val_auc_ctr           # reported per epoch/iteration by the workload
    mode: max
    params:                       # Optuna distributions (TPE)
      lam: {type: float, low: 0.01, high: 1.0, log: true}
      m1:  {type: float, low: 0.0, high: 0.5, step: 0.1}
      model: {type: categorical, choices: [mmoe, ple]}
    grid:                         # --grid: the full product, Optuna's GridSampler
      lam: [0.05, 0.1, 0.2]
    report: step                  # step (default) | final: the metric exists only once training ends

``report: final`` is for a metric that a run computes after its last step (VAMO's ``val_day_score``,
its validation-day bid): each trial reports once, its final metrics, and no trial is stopped early
(FIFO instead of ASHA, whose decisions need the metric at every step).

Each trial is a Tune function trainable that runs the workload's one training entry inside it
(``adray.train.run_training``; Train V2 cannot be passed to a Tuner) with a reporter that forwards
every loop step to Tune: ``tune.report`` for steps reported in the trial's process (RLlib), Ray
Train's ``TuneReportCallback`` for steps reported by Ray Train workers. ASHA stops weak trials at
step boundaries; ``max_t`` is the workload's loop length (its trainer's ``loop_field``). A finished
trial uploads its model directory to the sweep's storage; a trial stopped by ASHA leaves its last
checkpoint, which the trainer may salvage. A sweep's name is derived from the space and the base
config, so running the same command again resumes it (``Tuner.restore``). The sweep lives under
``$ADRAY_STORAGE/sweeps/<name>`` (a local folder or ``s3://...``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import signal
import sys
import threading
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from ray.tune import Callback

from adray.config import Config, ConfigError, load_config
from adray.paths import home, sweeps_storage
from adray.runtime import orphan_placement_group_reaper
from adray.storage import Storage
from adray.workload import Reporter, TrainConfig, Workload, data_dir_for, get_workload


class TuneSpaceError(ValueError):
    """A malformed tune space: names the file, the parameter and what was expected."""


@dataclasses.dataclass(frozen=True)
class TuneSpace:
    path: Path
    workload: str
    config: str | None
    metric: str
    mode: str
    params: dict[str, dict[str, Any]]
    grid: dict[str, list[Any]]
    grace_period: int = 1
    """ASHA: epochs (iterations) every trial runs before it can be stopped."""
    report: str = "step"
    """``step``: every loop step reports the metric (ASHA); ``final``: only the finished run does."""


@dataclasses.dataclass(frozen=True)
class SweepResult:
    best_params: dict[str, Any]
    best_metrics: dict[str, float]
    model_ref: str | None
    table_path: Path
    plot_path: Path
    num_trials: int


_TYPES = {"float", "int", "categorical"}
_KEYS = {"float": {"type", "low", "high", "step", "log"}, "int": {"type", "low", "high", "step", "log"},
         "categorical": {"type", "choices"}}


def load_space(path: Path | str, workload: str | None = None) -> TuneSpace:
    """Read and validate a tune space against the workload's config class."""
    path = Path(path)
    if not path.is_file():
        raise TuneSpaceError(f"tune space {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise TuneSpaceError(f"{path}: expected a mapping at top level")
    unknown = set(raw) - {"workload", "config", "metric", "mode", "params", "grid", "grace_period", "report"}
    if unknown:
        raise TuneSpaceError(f"{path}: unknown key(s) {sorted(unknown)}")
    wl_name = raw.get("workload") or workload
    if workload and wl_name != workload:
        raise TuneSpaceError(f"{path}: space is for workload {wl_name!r}, not {workload!r}")
    wl = get_workload(str(wl_name))
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        raise TuneSpaceError(f"{path}: mode={mode!r}; expected max or min")
    if not raw.get("metric"):
        raise TuneSpaceError(f"{path}: 'metric' is required (e.g. val_{wl.trainer.objective})")
    params = raw.get("params") or {}
    grid = raw.get("grid") or {}
    for name, spec in params.items():
        _check_param(path, wl, name)
        if not isinstance(spec, dict) or spec.get("type") not in _TYPES:
            raise TuneSpaceError(f"{path}: params.{name}: expected a mapping with type in {sorted(_TYPES)}")
        unknown = set(spec) - _KEYS[spec["type"]]
        if unknown:
            raise TuneSpaceError(f"{path}: params.{name}: unknown key(s) {sorted(unknown)} for type "
                                 f"{spec['type']}; valid keys: {sorted(_KEYS[spec['type']])}")
        if spec["type"] == "categorical":
            if not spec.get("choices"):
                raise TuneSpaceError(f"{path}: params.{name}: categorical needs a non-empty 'choices' list")
        elif "low" not in spec or "high" not in spec or not spec["low"] <= spec["high"]:
            raise TuneSpaceError(f"{path}: params.{name}: expected numeric low <= high")
    for name, values in grid.items():
        _check_param(path, wl, name)
        if not isinstance(values, list) or not values:
            raise TuneSpaceError(f"{path}: grid.{name}: expected a non-empty list of values")
    grace = raw.get("grace_period", 1)
    if not isinstance(grace, int) or isinstance(grace, bool) or grace < 1:
        raise TuneSpaceError(f"{path}: grace_period={grace!r}: expected an integer >= 1 (epochs before ASHA may stop a trial)")
    report = raw.get("report", "step")
    if report not in ("step", "final"):
        raise TuneSpaceError(f"{path}: report={report!r}: expected step (the metric at every epoch/iteration) "
                             "or final (only when a trial's training has finished)")
    return TuneSpace(path, wl.name, raw.get("config"), str(raw["metric"]), mode, params, grid, grace, report)


def _check_param(path: Path, wl: Workload, name: str) -> None:
    cls: Any = wl.config_cls
    for part in name.split("."):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            raise TuneSpaceError(
                f"{path}: parameter {name!r} is not a field of {wl.config_cls.__name__} "
                f"(workload {wl.name}); valid: {sorted(fields)}"
            )
        cls = typing.get_type_hints(cls)[part]


def _distributions(space: TuneSpace, grid: bool) -> dict[str, Any]:
    import optuna.distributions as od

    if grid:
        return {k: od.CategoricalDistribution(v) for k, v in space.grid.items()}
    out: dict[str, Any] = {}
    for k, s in space.params.items():
        if s["type"] == "categorical":
            out[k] = od.CategoricalDistribution(s["choices"])
        elif s["type"] == "int":
            out[k] = od.IntDistribution(int(s["low"]), int(s["high"]), log=bool(s.get("log")), step=int(s.get("step", 1)))
        else:
            out[k] = od.FloatDistribution(float(s["low"]), float(s["high"]), log=bool(s.get("log")), step=s.get("step"))
    return out


class _TrialLines(Callback):
    """One line per trial report and end, instead of Tune's full status tables."""

    def __init__(self, metric: str, total: int) -> None:
        self.metric, self.total = metric, total

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.config.items())
        print(f"[tune] {trial.trial_id} iter {result.get('training_iteration')}: "
              f"{self.metric}={result.get(self.metric, float('nan')):.4f}  ({params})", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Tune calls this before it sets the trial's status
        done = 1 + sum(t.status in ("TERMINATED", "ERROR") for t in trials if t is not trial)
        print(f"[tune] {trial.trial_id} finished ({done}/{self.total} trials done)", flush=True)


def _trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


class _TuneReporter(Reporter):
    """Forwards a trial's loop steps to Tune (made inside the trial: it needs the Tune session)."""

    def report(self, metrics: Any) -> None:
        from ray import tune

        tune.report(dict(metrics))

    def train_callbacks(self) -> list[Any]:
        from ray.tune.integration.ray_train import TuneReportCallback

        return [TuneReportCallback()]


def _trial(config: dict[str, Any], sweep: dict[str, Any]) -> None:  # a Tune function trainable
    from ray import tune

    from adray.train import run_training

    wl = get_workload(sweep["workload"])
    # The dataset the sweep resolved (generated: under the driver's $ADRAY_STORAGE, which a trial's
    # worker process need not share), never resolved again in the trial.
    cfg = wl.config_cls.from_dict(sweep["cfg"]).override({**config, "data": sweep["data"]}, "tune trial")
    trial_id = tune.get_context().get_trial_id()
    storage: Storage = sweep["storage"]
    final = sweep["report"] == "final"
    out = run_training(wl, cfg, num_workers=sweep["workers"], publish=False, run_name=trial_id,
                       runs=storage.child("trials"), cpus_per_worker=sweep["cpus_per_worker"],
                       reporter=Reporter() if final else _TuneReporter())
    storage.upload_dir(out.model_dir, "models", trial_id)  # where the driver publishes the best from
    if final:  # the one report: after the upload, so the trial's model is there when Tune sees it
        tune.report({**{k: float(v) for k, v in out.metrics.items() if isinstance(v, int | float)},
                     "epochs_run": len(out.history)})


def run_sweep(
    space: TuneSpace,
    *,
    trials: int = 8,
    grid: bool = False,
    config: str | None = None,
    overrides: dict[str, Any] | None = None,
    num_workers: int = 1,
    max_concurrent: int = 0,
    name: str | None = None,
    progress: bool = False,
    publish: bool = True,
) -> SweepResult:
    from optuna.samplers import GridSampler, TPESampler
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from adray.runtime import check_count, check_fits, check_train_workers, cluster_size, ensure_ray

    check_count("--trials", trials)
    check_count("--workers", num_workers)
    check_count("--concurrent", max_concurrent, minimum=0)
    ensure_ray()
    wl = get_workload(space.workload)
    cfg: TrainConfig = load_config(wl.config_cls, config or space.config, wl.configs_dir, overrides)
    if grid and not space.grid:
        raise TuneSpaceError(f"{space.path}: --grid given but the space has no 'grid' section")
    if not grid and not space.params:
        raise TuneSpaceError(f"{space.path}: no 'params' to search")
    dists = _distributions(space, grid)
    _validate_values(space, wl, cfg, dists)
    num_samples = math.prod(len(v) for v in space.grid.values()) if grid else trials
    sampler = GridSampler(space.grid, seed=cfg.seed) if grid else TPESampler(seed=cfg.seed)

    # Resources, checked before anything starts (a request larger than the cluster, or than it can
    # scale to, would wait forever): a trial holds trial_cpu and its Train workers per_worker each;
    # its workers are refused past one per CPU (as `adray train` refuses them), so a trial
    # (0.25 + 0.75 n <= n CPUs) always fits.
    workers_what = f"one trial's {num_workers} Ray Train worker{'s' if num_workers > 1 else ''} (one CPU each)"
    check_train_workers(num_workers, what=workers_what)
    total = cluster_size().get("CPU")
    trial_cpu, per_worker = 0.25, 0.75
    per_trial = trial_cpu + num_workers * per_worker
    fits = num_samples if math.isinf(total) else max(1, int(total // per_trial))
    if max_concurrent > fits:
        check_fits(f"--concurrent {max_concurrent}", {"CPU": max_concurrent * per_trial},
                   f"{max_concurrent} trials of {per_trial:g} CPUs each (the trial {trial_cpu:g} + {num_workers} "
                   f"worker{'s' if num_workers > 1 else ''} x {per_worker:g})",
                   f"use --concurrent {fits} or fewer (or leave it out: as many as fit)")
    concurrent = min(max_concurrent or fits, fits)

    from adray.train import prepare_data

    data_dir = prepare_data(wl, cfg, progress)  # once, here: concurrent trials must not each generate it

    key = json.dumps([space.workload, str(space.path), cfg.key_dict(), grid, num_samples, num_workers], sort_keys=True)
    name = name or f"tune-{space.workload}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    sweeps = sweeps_storage()
    storage = sweeps.child(name)
    storage_path, storage_fs = sweeps.ray_storage()
    max_t = wl.loop_length(cfg)
    sweep = {"workload": wl.name, "cfg": cfg.to_dict(), "workers": num_workers,
             "cpus_per_worker": per_worker, "storage": storage, "report": space.report, "data": str(data_dir)}
    trainable = tune.with_resources(tune.with_parameters(_trial, sweep=sweep), {"CPU": trial_cpu})
    callbacks = [_TrialLines(space.metric, num_samples)] if progress else []
    exp_path = storage.path()
    if tune.Tuner.can_restore(exp_path, storage_filesystem=storage_fs):
        if progress:
            print(f"[adray] resuming sweep {name} from {storage.display()}")
        tuner = tune.Tuner.restore(exp_path, trainable, resume_errored=True, storage_filesystem=storage_fs)
    else:
        searcher = ConcurrencyLimiter(
            OptunaSearch(dists, metric=space.metric, mode=space.mode, sampler=sampler), max_concurrent=concurrent
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                # max_t one past the last epoch: a trial that reaches the end finishes by itself
                # (and writes its best model) instead of being stopped at its final report.
                scheduler=FIFOScheduler() if space.report == "final" else
                ASHAScheduler(metric=space.metric, mode=space.mode, max_t=max(1, max_t) + 1,
                              grace_period=min(space.grace_period, max(1, max_t)), reduction_factor=2),
                num_samples=num_samples,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(name=name, storage_path=storage_path, storage_filesystem=storage_fs,
                                      verbose=0, callbacks=callbacks),
        )
    with orphan_placement_group_reaper(), _interrupt_flag() as interrupted:
        grid_result = tuner.fit()
    if interrupted.is_set():
        print(f"[adray] interrupted: sweep {name} stopped, nothing published; its state is kept under "
              f"{storage.display()}, and the same command resumes it", file=sys.stderr, flush=True)
        raise KeyboardInterrupt
    return _summarise(space, wl, cfg, grid_result, storage, name, publish)


@contextlib.contextmanager
def _interrupt_flag() -> Iterator[threading.Event]:
    """Ctrl-C during ``Tuner.fit``: Tune stops the trials and saves the sweep's state, and the caller
    learns that it happened (the event is set).

    Tune's own SIGINT handler (Ray 2.60) does the first part and then returns from ``fit`` as if the
    sweep had finished: the partial sweep would be summarised and its best-so-far published. So
    Tune's handler is turned off (``TUNE_DISABLE_SIGINT_HANDLER``) and this one sets the event and
    asks Tune to stop through the SIGUSR1 it also listens to. A second Ctrl-C raises
    ``KeyboardInterrupt`` at once. Outside the main thread nothing is installed (none can be).
    """
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_sigint(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if not callable(signal.getsignal(signal.SIGUSR1)):  # Tune is not listening (yet): stop here
            raise KeyboardInterrupt
        interrupted.set()
        print("\n[adray] Ctrl-C: stopping the sweep's trials and saving its state (Ctrl-C again: stop at once)",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGUSR1)

    old_int, old_usr1 = signal.signal(signal.SIGINT, on_sigint), signal.getsignal(signal.SIGUSR1)
    old_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, old_int)
        if old_usr1 is not None:  # None: a handler not set from Python; leave Tune's (it only sets a flag)
            signal.signal(signal.SIGUSR1, old_usr1)
        if old_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = old_env


def _validate_values(space: TuneSpace, wl: Workload, cfg: Config, dists: dict[str, Any]) -> None:
    """Every extreme of the space must make a valid config (fail before any trial starts)."""
    import optuna.distributions as od

    for k, d in dists.items():
        values = d.choices if isinstance(d, od.CategoricalDistribution) else [d.low, d.high]
        for v in values:
            try:
                cfg.override({k: v}, str(space.path))
            except ConfigError as exc:
                raise TuneSpaceError(f"{space.path}: parameter {k}={v!r} is invalid: {exc}") from None


def _summarise(space: TuneSpace, wl: Workload, cfg: Config, results: Any, storage: Storage, name: str,
               publish: bool) -> SweepResult:
    import pandas as pd

    rows = []
    for r in results:
        params = dict(r.config)
        hist = r.metrics_dataframe if r.metrics_dataframe is not None else pd.DataFrame()
        vals = hist[space.metric].dropna() if space.metric in hist else pd.Series(dtype=float)
        best_val = (vals.max() if space.mode == "max" else vals.min()) if len(vals) else float("nan")
        rows.append({"trial_id": (r.metrics or {}).get("trial_id"), **params, space.metric: best_val,
                     "epochs_run": int(hist["epochs_run"].iloc[-1]) if "epochs_run" in hist else len(hist),
                     "error": bool(r.error),
                     "_last": (r.metrics or {}).get("checkpoint_path")})
    table = pd.DataFrame(rows)
    out_dir = storage.local_path() if storage.is_local else home() / "sweeps" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    table_path = out_dir / "results.csv"
    table.drop(columns=["_last"]).sort_values(space.metric, ascending=space.mode == "min").to_csv(
        table_path, index=False)
    plot_path = out_dir / "objective.png"
    _plot(table, space, plot_path)
    if not storage.is_local:  # the table and plot beside the sweep, where every node sees them
        for f in (table_path, plot_path):
            with storage.fs.open_output_stream(storage.path(f.name)) as out:
                out.write(f.read_bytes())
    ok = table[table[space.metric].notna()]
    if ok.empty:
        raise RuntimeError(f"sweep {name}: no trial reported {space.metric!r}; see {storage.display()}")
    ranked = ok.sort_values(space.metric, ascending=space.mode == "min")
    names = [k for k in (*space.params, *space.grid) if k in table]
    best = ranked.iloc[0]
    ref = None
    if publish:  # the best trial with a publishable model (an ASHA-stopped trial may have none)
        for _, row in ranked.iterrows():
            params = {k: _plain(row[k]) for k in names}
            metrics = {space.metric: float(row[space.metric])}
            ref = _publish_best(wl, cfg.override(params, "best trial"), row, storage, space, metrics, name)
            if ref is not None:
                best = row
                break
        if ref is None:
            print(f"[adray] warning: sweep {name}: no trial left a publishable model; nothing published")
    best_params = {k: _plain(best[k]) for k in names}
    best_metrics = {space.metric: float(best[space.metric])}
    return SweepResult(best_params, best_metrics, ref, table_path, plot_path, len(table))


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _publish_best(wl: Workload, cfg: Any, best: Any, storage: Storage, space: TuneSpace,
                  metrics: dict[str, float], sweep: str) -> str | None:
    """Publish a trial's model: the one it uploaded when it finished, or (stopped by ASHA) what its
    trainer salvages from its last checkpoint."""
    from adray.models import finish_model_dir
    from adray.paths import cache_root
    from adray.registry import Registry
    from adray.train import make_context

    trial_id = str(best["trial_id"])
    if storage.is_dir("models", trial_id):
        src = storage.cached_copy(cache_root() / "sweeps", "models", trial_id)
    else:
        last = best.get("_last")
        ctx = make_context(wl, cfg, data_dir_for(wl, cfg), run_name=trial_id, runs=storage.child("trials"),
                           scratch=home() / "scratch" / sweep)
        salvaged = wl.trainer.salvage(cfg, ctx, last if isinstance(last, str) else None)
        if salvaged is None:
            return None
        finish_model_dir(salvaged.model_dir, cfg, salvaged.meta)
        src = salvaged.model_dir
    mv = Registry().publish(wl.name, src, {"workload": wl.name, "config": cfg.to_dict(), "metrics": metrics,
                                          "sweep": sweep, "trial": trial_id, "tune_space": str(space.path)})
    return mv.ref


def _plot(table: Any, space: TuneSpace, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in itertools.chain(space.params, space.grid) if k in table][:8]
    names = list(dict.fromkeys(names))
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4 * max(1, len(names)), 3.2), squeeze=False)
    for ax, k in zip(axes[0], names):
        x = table[k]
        if x.dtype == object:
            x = x.astype(str)
        ax.scatter(x, table[space.metric], alpha=0.8)
        ax.set_xlabel(k)
        ax.set_ylabel(space.metric)
        if space.params.get(k, {}).get("log"):
            ax.set_xscale("log")
    fig.suptitle(f"{space.workload}: {space.metric} per trial ({len(table)} trials)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
