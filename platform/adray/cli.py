"""The ``adray`` command. Thin: parse, then call the modules that do the work."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from adray.cli_common import JsonOpt
from adray.cli_common import user_errors as _user_errors

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Train, tune, evaluate and serve ad decision models on Ray.")
data_app = typer.Typer(no_args_is_help=True, help="Make, import and inspect datasets.")
app.add_typer(data_app, name="data")

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="named config of the workload or a YAML file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config field: key=value (repeatable)")]
AddressOpt = Annotated[str | None, typer.Option("--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")]


def main() -> None:
    from adray.interrupts import install_interrupt_watchdog

    install_interrupt_watchdog()  # any Ctrl-C ends the command within seconds, whatever it was doing
    try:
        app()
    except _user_errors() as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)


def _resolve(workload: str, config: str | None, sets: list[str] | None) -> tuple[Any, Any]:
    from adray.config import load_config, parse_set
    from adray.workload import get_workload

    wl = get_workload(workload)
    cfg = load_config(wl.config_cls, config, wl.configs_dir, parse_set(sets))
    return wl, cfg


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _emit(as_json: bool, payload: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    if as_json:
        print(json.dumps(payload, default=str))
        return
    table = Table(title=f"{payload['workload']}  {payload.get('model') or ''}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in sorted(payload.get("metrics", {}).items()):
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)
    methods = payload.get("methods")
    if methods:
        keys = sorted({k for m in methods.values() for k in m})
        t = Table(title="methods")
        t.add_column("method")
        for k in keys:
            t.add_column(k, justify="right")
        for name, m in methods.items():
            t.add_row(name, *[f"{m[k]:.4f}" if isinstance(m.get(k), float) else str(m.get(k, "")) for k in keys])
        Console().print(t)


# ----------------------------------------------------------------------------- data

OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="replace the dataset already at --out")]


@data_app.command("make")
def data_make(
    workload: str,
    out: Annotated[str | None, typer.Option(
        "--out", help="dataset directory or storage URI, e.g. s3://bucket/x (default data/<workload>)")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Generate a dataset with the workload's generator or simulator."""
    from adray.data import check_out_dir, read_manifest
    from adray.workload import data_dir_for

    wl, cfg = _resolve(workload, config, set_)
    if wl.make_data is None:
        raise typer.BadParameter(f"workload {workload} has no generator; use `adray data import`")
    target = _out(out) if out else data_dir_for(wl, cfg)
    check_out_dir(target, overwrite)
    wl.make_data(cfg, target)
    _print_manifest(target, read_manifest(target))


def _out(out: str) -> Path | str:
    """``--out``: a storage URI stays a string (``Path`` would collapse ``s3://``), a path is a Path."""
    return out if "://" in out else Path(out)


@data_app.command("import")
def data_import(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT")],
    files: Annotated[list[Path], typer.Argument(help="input file(s) of that format")],
    out: Annotated[str, typer.Option("--out", help="dataset directory or storage URI (s3://bucket/x) to write")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-o", help="an option of the format's importer: KEY=VALUE (repeatable); an unknown key "
        "lists the format's options")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Convert real files of a public format (aliexpress, alicpp, kuairand-sequence, ...) to a dataset.

    Nothing the files lack is filled in unless an --option asks for it; the manifest and the console
    then say how many rows were filled in."""
    from adray.data import check_out_dir, read_manifest
    from adray.data.options import parse_options
    from adray.workload import WorkloadError, get_workload, workload_names

    workloads = [get_workload(n) for n in workload_names()]
    owners = [w for w in workloads if fmt in w.importers]
    if not owners:
        known = sorted(f for w in workloads for f in w.importers)
        raise WorkloadError(f"unknown data format {fmt!r}; known formats: {known}")
    wl, cfg = _resolve(owners[0].name, config, set_)  # the importer names a missing file, a directory...
    importer = wl.importers[fmt]
    opts = parse_options(importer, fmt, option)
    target = _out(out)
    check_out_dir(target, overwrite)
    importer(files, target, cfg, **opts)
    _print_manifest(target, read_manifest(target))


@data_app.command("show")
def data_show(path: Annotated[str, typer.Argument(help="dataset directory or storage URI")]) -> None:
    """Print a dataset's manifest (splits, rows, schema, hash, source) and each file's footer
    statistics (rows, row groups, bytes); reads no rows."""
    from adray.data import read_dataset

    ds = read_dataset(path)
    _print_manifest(ds.display, ds.manifest, schema=True)
    for split in ds.splits:
        for f in ds.file_stats(split):
            print(f"  {f['name']:<40} {f['rows']:>10,d} rows  {f['row_groups']:>4d} row groups  {f['bytes']:>12,d} bytes")


def _print_manifest(path: Path | str, m: dict[str, Any], schema: bool = False) -> None:
    print(f"dataset {path}  format={m.get('format', 1)}  source={m['source']}  seed={m.get('seed')}  "
          f"hash={m['content_hash'][:16]}")
    for name, s in m["splits"].items():
        files = len(s.get("files", [None]))
        print(f"  {name:<8} {s['rows']:>10,d} rows  {len(s['schema'])} columns  {files} file(s)")
        if schema:
            for c, t in s["schema"].items():
                print(f"      {c}: {t}")
    meta = m.get("meta") or {}
    guard = meta.get("leak_guard")
    if guard:
        print(f"  leak guard: {json.dumps(guard, default=str)}")
    for key, label in _PROVENANCE:
        if meta.get(key) is not None:
            print(f"  {label}: {json.dumps(meta[key], default=str)}")


_PROVENANCE = (("import_options", "import options"), ("filled_in", "filled in (not in the files)"),
               ("left_out", "rows left out"), ("task_mapping", "tasks"),
               ("out_of_vocab", "out-of-vocabulary ids (mapped to 0, per split and column)"))
"""Manifest meta that says what an import did beyond copying the files, printed by `data make/import/show`."""


# ----------------------------------------------------------------------------- train / tune / eval


@app.command()
def train(
    workload: str,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Ray Train workers")] = 1,
    gpu: Annotated[bool, typer.Option("--gpu", help="one GPU per worker (per learner for RLlib workloads)")] = False,
    precision: Annotated[str, typer.Option("--precision", help="fp32, or bf16 autocast where the workload allows it")] = "fp32",
    name: Annotated[str | None, typer.Option("--name", help="publish under this model name (default: the workload's)")] = None,
    placement: Annotated[str, typer.Option(
        "--placement", help="Ray Train workers: pack (few nodes), spread, or strict_spread (one per node)")] = "pack",
    address: AddressOpt = None,
    no_publish: Annotated[bool, typer.Option("--no-publish", help="do not publish to the registry")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a workload with its trainer (Ray Train or RLlib) and publish the model."""
    from adray.config import ConfigError
    from adray.runtime import check_placement, ensure_ray
    from adray.train import prepare_data, run_training

    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"--precision {precision!r}: expected fp32 or bf16")
    check_placement(placement)
    wl, cfg = _resolve(workload, config, set_)
    prepare_data(wl, cfg, progress=not as_json)  # a missing dataset fails before Ray starts
    ensure_ray(address)
    out = run_training(wl, cfg, num_workers=workers, use_gpu=gpu, precision=precision,  # type: ignore[arg-type]
                       publish=not no_publish, progress=not as_json, model_name=name,
                       placement=placement)  # type: ignore[arg-type]
    _emit(as_json, {"workload": workload, "model": out.model_ref, "metrics": _finite(out.metrics)})


@app.command()
def tune(
    workload: str,
    space: Annotated[Path | None, typer.Option("--space", help="tune space YAML (default tune_spaces/<workload>.yaml)")] = None,
    trials: Annotated[int, typer.Option("--trials", "-n", help="number of trials (ignored with --grid)")] = 8,
    grid: Annotated[bool, typer.Option("--grid", help="run the space's grid instead of TPE")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workers: Annotated[int, typer.Option("--workers", help="Ray Train workers per trial")] = 1,
    concurrent: Annotated[int, typer.Option("--concurrent", help="trials at once (default: fits the cluster)")] = 0,
    name: Annotated[str | None, typer.Option("--name", help="sweep name (rerun the same name to resume)")] = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Optuna (TPE or grid) + ASHA sweep over a tune space; publishes the best model."""
    from adray.config import parse_set
    from adray.runtime import ensure_ray
    from adray.tune import load_space, run_sweep

    sp = load_space(space or Path("tune_spaces") / f"{workload}.yaml", workload)
    ensure_ray(address)
    res = run_sweep(sp, trials=trials, grid=grid, config=config, overrides=parse_set(set_),
                    num_workers=workers, max_concurrent=concurrent, name=name, progress=not as_json)
    if not as_json:
        print(f"results table: {res.table_path}\nplot: {res.plot_path}")
    _emit(as_json, {"workload": workload, "model": res.model_ref, "metrics": _finite(res.best_metrics),
                    "best_params": res.best_params, "table": str(res.table_path), "plot": str(res.plot_path)})


@app.command("eval")
def evaluate(
    workload: str,
    model: Annotated[str, typer.Option("--model", "-m", help="name@version in the registry")] = "",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: Annotated[Path | None, typer.Option("--data", help="dataset directory (default: the model's)")] = None,
    compare: Annotated[list[str] | None, typer.Option(
        "--compare", help="LABEL=NAME@VERSION: another published model of the workload in the table (repeatable)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a published model, models to compare and the workload's baselines (the paper's metrics)."""
    from adray.evaluate import parse_compare, run_eval

    ref, metrics, methods = run_eval(workload, model or f"{workload}@latest", config, set_, data,
                                     parse_compare(compare))
    payload: dict[str, Any] = {"workload": workload, "model": ref, "metrics": _finite(metrics)}
    if methods:
        payload["methods"] = {k: _finite(v) for k, v in methods.items()}
    _emit(as_json, payload)


# ----------------------------------------------------------------------------- demo


@app.command()
def demo(
    workers: Annotated[int, typer.Option("--workers")] = 2,
    trials: Annotated[int, typer.Option("--trials")] = 4,
    address: AddressOpt = None,
    requests: Annotated[int, typer.Option("--requests", help="Feed requests sent to the graph.")] = 30,
    port: Annotated[int, typer.Option("--port", help="Serve HTTP port.")] = 8000,
) -> None:
    """The main job: all five workloads trained (Ray Train, RLlib), a short Optuna sweep, the feed graph
    on Ray Serve with sample requests, and a summary table."""
    from adray.demo import run_demo

    run_demo(workers=workers, trials=trials, address=address, requests=requests, port=port)


def _register_models() -> None:
    from adray.cli_models import models_app

    app.add_typer(models_app, name="models")


def _register_optional() -> None:
    """The serve/jobs verbs. When their module does not import (a broken install: a dependency or a
    file missing), the verbs still exist and, when used, say what broke instead of vanishing."""
    try:
        from adray.cli_serve import jobs_app, serve_app, submit
    except ImportError as exc:
        missing = f"; missing module: {exc.name}" if exc.name else ""
        why = (f"importing adray.cli_serve failed ({type(exc).__name__}: {exc}{missing}): the install is broken; "
               "reinstall it (make install)")
        for verb in ("serve", "jobs", "submit"):
            app.command(verb, help=f"(unavailable: {why})", add_help_option=False,
                        context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
                _unavailable(verb, why))
        return
    app.add_typer(serve_app, name="serve")
    app.add_typer(jobs_app, name="jobs")
    app.command("submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(submit)


def _unavailable(verb: str, why: str) -> Any:
    def unavailable(ctx: typer.Context) -> None:
        typer.secho(f"error: `adray {verb}` is unavailable: {why}", fg="red", err=True)
        raise typer.Exit(2)

    return unavailable


_register_models()
_register_optional()

if __name__ == "__main__":
    main()
