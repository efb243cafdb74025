"""``adray models``: list, show, promote (gated or forced) and the alias history of the registry."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from adray.cli_common import JsonOpt, user_errors
from adray.ope_gate import DEFAULT_ALPHA, DEFAULT_MARGIN, DEFAULT_MAX_UNSUPPORTED, DEFAULT_MIN_ROWS

models_app = typer.Typer(no_args_is_help=True, help="The model registry.")


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """All published models and versions, with the aliases (``latest``, ``@serving``, ...) naming them."""
    from adray.registry import Registry

    reg = Registry()
    aliases = {n: reg.aliases(n) for n in reg.names()}
    rows = [{"ref": mv.ref, "workload": mv.manifest.get("workload"), "created": mv.manifest.get("created"),
             "latest": reg.latest(mv.name) == mv.version,
             "aliases": [a for a, v in aliases.get(mv.name, {}).items() if v == mv.version],
             "metrics": mv.manifest.get("metrics", {})}
            for mv in reg.list()]
    if as_json:
        print(json.dumps(rows, default=str))
        return
    if not rows:
        print(f"no models in {reg.root}")
    for r in rows:
        tags = (["latest"] if r["latest"] else []) + [f"@{a}" for a in r["aliases"]]
        print(f"{r['ref']:<28} {r['workload']:<10} {r['created']}  {' '.join(tags)}".rstrip())


@models_app.command("show")
def models_show(ref: str) -> None:
    """A model version's manifest (config, dataset hash, metrics, code version) and its aliases."""
    from adray.registry import Registry

    reg = Registry()
    mv = reg.get(ref)
    print(f"{mv.ref}  at {mv.location}")
    aliases = reg.aliases(mv.name)
    mine = [f"@{a}" for a, v in aliases.items() if v == mv.version]
    if reg.latest(mv.name) == mv.version:
        mine.insert(0, "latest")
    print(f"aliases: {' '.join(mine) or 'none'}")
    if aliases:
        print(f"aliases of {mv.name}: " + ", ".join(f"@{a} -> {v}" for a, v in aliases.items()))
    print(json.dumps(mv.manifest, indent=2, default=str))


@models_app.command("history")
def models_history(
    name: Annotated[str, typer.Argument(help="model name")],
    alias: Annotated[str | None, typer.Option("--alias", help="only this alias's moves")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every move of the model's aliases, oldest first: time, alias, from -> to, how (gate / forced) and why."""
    from adray.registry import Registry

    records = Registry().history(name, alias)
    if as_json:
        print(json.dumps(records, default=str))
        return
    if not records:
        print(f"no alias moves recorded for {name!r}")
    for r in records:
        gate = r.get("gate") or {}
        why = gate.get("reason", "") if r.get("how") == "gate" else ""
        failed = f"  FAILED: {r['failed']}" if r.get("failed") else ""
        print(f"{r.get('time')}  @{r.get('alias')}: {r.get('from') or 'unset'} -> {r.get('to')}  "
              f"{r.get('how')}  by {r.get('by')}{'  ' + why if why else ''}{failed}")


@models_app.command("promote")
def models_promote(
    ref: Annotated[str, typer.Argument(metavar="NAME@VERSION", help="the version to promote")],
    gate: Annotated[str | None, typer.Option(
        "--gate", help="ope: value the candidate off-policy on the decision log first")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="without --gate: move the alias with no gate (recorded as forced); with --gate: allow the "
                        "first promotion (no version under the alias to compare with)")] = False,
    rule: Annotated[str, typer.Option(
        "--rule", help="non_inferior: not worse than the margin, with confidence; superior: better, with confidence "
                       "(the strict rule)")] = "non_inferior",
    margin: Annotated[float, typer.Option(
        "--margin", help="non-inferiority margin, a fraction of the serving value")] = DEFAULT_MARGIN,
    alpha: Annotated[float, typer.Option(
        "--alpha", help="one-sided error rate of the rule")] = DEFAULT_ALPHA,
    max_unsupported: Annotated[float, typer.Option(
        "--max-unsupported", help="largest share of the candidate's probability mass on actions the logging "
                                  "policy never takes")] = DEFAULT_MAX_UNSUPPORTED,
    log: Annotated[str | None, typer.Option(
        "--log", help="storage URI of the decision log (default $ADRAY_STORAGE, else $ADRAY_HOME)")] = None,
    stream: Annotated[str, typer.Option("--stream", help="the decision log's stream under --log")] = "decisions/feed",
    min_rows: Annotated[int, typer.Option(
        "--min-rows", help="fewest usable logged rows (decided by the serving version, outcomes joined)")] = DEFAULT_MIN_ROWS,
    alias: Annotated[str, typer.Option("--alias", help="the alias to move")] = "serving",
    as_json: JsonOpt = False,
) -> None:
    """Point NAME@ALIAS (default @serving) at a version: through --gate ope, or with --force.

    The gate compares candidate and serving version on the serving version's logged decisions,
    paired on the same rows, under the serving version's reward (adray/ope_gate.py gives the rule).
    Exit status: 0 promoted (or already), 1 held back, 3 cannot value (the log cannot decide), 2 bad input.
    """
    from adray.promote import PromoteError, promote

    try:
        res = promote(ref, gate=gate, alias=alias, log_uri=log, stream=stream, min_rows=min_rows, force=force,
                      rule=rule, margin=margin, alpha=alpha, max_unsupported=max_unsupported)  # type: ignore[arg-type]
    except (PromoteError, *user_errors()) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(res.to_dict(), default=str))
    else:
        _print_gate(res)
    raise typer.Exit(res.exit_code)


def _print_gate(res: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    g = res.gate
    if g is not None:
        d = g.decision
        print(f"gate ope: {g.candidate} (candidate) vs {g.serving} (@{res.alias}) on {g.log}")
        print("rows: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in g.rows.items()))
        table = Table()
        for col in ("estimate", "value", "std err", "ESS", "n"):
            table.add_column(col, justify="left" if col == "estimate" else "right", no_wrap=True)
        for label, e in (("serving: mean logged reward", d.serving), ("candidate: IPS from the floor", d.candidate),
                         ("candidate: SNIPS (info)", d.snips), ("candidate: DR (info)", g.dr)):
            if e is None:
                table.add_row(label, "-", "", "", "")
                continue
            table.add_row(label, f"{e.value:.4f}", f"{e.std_err:.4f}", f"{e.ess:.1f}", str(e.n))
        table.add_row("difference (paired)", f"{d.difference:.4f}", f"{d.difference_se:.4f}", "", str(d.n))
        Console().print(table)
        print(f"candidate mass off the log's support: {100 * d.unsupported:.2f}%; agrees with the logged action on "
              f"{100 * d.agreement:.1f}% of rows")
        print(f"rule: {d.rule}")
        for w in d.warnings:
            typer.secho(f"warning: {w}", fg="yellow")
    colour = {"promoted": "green", "unchanged": "green", "held back": "yellow", "cannot value": "red"}
    typer.secho(res.message, fg=colour[res.outcome])
