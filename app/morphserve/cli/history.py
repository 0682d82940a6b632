"""`morphserve graph`, `versions` and `diff`: a model's computation graph and how it came to be."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from morphserve.cli.common import JsonFlag, client, console, print_json, print_text, write
from morphserve.cli.describe import node_what, op_summary, shape


def graph(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int | None, typer.Option(help="a past version (default: the current one)")] = None,
    format: Annotated[
        Literal["table", "json", "dot", "svg"],
        typer.Option("--format", "-f", help="table (terminal), json, dot, or svg (rendered by the server)"),
    ] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write to this file instead of stdout")] = None,
) -> None:
    """Show a model's computation graph."""
    from rich.table import Table

    with client(ctx) as c:
        data = c.graph(model, version, "json" if format == "table" else format)
    if format == "json":
        text = json.dumps(data, indent=2)
        return write(output, text) if output else typer.echo(text)
    if format in ("dot", "svg"):
        return write(output, data) if output else typer.echo(data, nl=format == "dot")
    totals = data["totals"]
    title = f"{data['model']} v{data['version']}: {totals['nodes']} nodes, {totals['params']:,} params"
    table = Table("id", "kind", "layer / function", "shape", "params", title=title)
    for n in data["nodes"]:
        table.add_row(
            n["id"],
            n["kind"],
            node_what(n),
            f"{n['datatype']} {shape(n['shape'])}",
            f"{n['params']:,}" if n["params"] else "",
        )
    if output:
        import io

        from rich.console import Console

        buffer = io.StringIO()
        Console(file=buffer, width=160, highlight=False).print(table)
        return write(output, buffer.getvalue())
    console().print(table)


def versions(
    ctx: typer.Context, model: Annotated[str, typer.Argument(help="model name")], as_json: JsonFlag = False
) -> None:
    """List a model's versions: parent, what changed, whether resident on the device, pinned, staged."""
    from rich.table import Table

    with client(ctx) as c:
        data = c.versions(model)
    if as_json:
        return print_json(data)
    title = f"{model} (current version {data['current']})"
    # Staged versions and evaluation scores come with rollouts: their columns only where a version has them.
    staged = any(v.get("staged") for v in data["versions"])
    scored = any(v.get("evaluations") for v in data["versions"])
    columns = ["version", "parent", "created", "ops", "resident", "pinned"]
    columns += ["staged"] * staged + ["evaluations"] * scored
    table = Table(*columns, title=title)
    for v in data["versions"]:
        mark = " *" if v["version"] == data["current"] else ""
        row = [
            f"{v['version']}{mark}",
            str(v["parent"] or ""),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["created_at"])),
            "; ".join(op_summary(o) for o in v["ops"]),
            "yes" if v["resident"] else "",
            "yes" if v.get("pinned") else "",
        ]
        row += ["yes" if v.get("staged") else ""] * staged
        row += [", ".join(_score(e) for e in v.get("evaluations") or [])] * scored
        table.add_row(*row)
    console().print(table)


def _score(e: dict[str, Any]) -> str:
    """`heldout: accuracy 0.9712`, or the mse against targets."""
    value = f"accuracy {e['accuracy']:.4f}" if "accuracy" in e else f"mse {e.get('mse', float('nan')):.4g}"
    return f"{e.get('dataset', '?')}: {value}"


def diff(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    a: Annotated[int, typer.Argument(help="from this version")],
    b: Annotated[int | None, typer.Argument(help="to this version \\[default: current]", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """What changed between two versions of a model."""
    with client(ctx) as c:
        d = c.diff(model, a, b)
    if as_json:
        return print_json(d)
    print_text(f"{d['model']}: version {d['from_version']} -> {d['to_version']}")
    print_text(f"  added:   {', '.join(d['added']) or '-'}")
    print_text(f"  removed: {', '.join(d['removed']) or '-'}")
    changed = ", ".join(f"{ch['id']} ({', '.join(ch['changes'])})" for ch in d["changed"])
    print_text(f"  changed: {changed or '-'}")
    if d["outputs_changed"]:
        print_text("  the outputs' shape or dtype changed")


def register(app: typer.Typer) -> None:
    app.command()(graph)
    app.command()(versions)
    app.command()(diff)
