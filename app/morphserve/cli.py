"""The `morphserve` command line (typer + rich).

`serve` runs the server; every other command talks to a running server through `morphserve.client.Client`. The commands
are deliberately thin: they parse arguments, call one client method and format the answer. All HTTP, encoding
and error typing lives in the client, so scripts using the client and people using the CLI see the same behaviour.
Server errors are printed as one red `error: <message>` line on stderr with exit code 1, never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer

from morphserve.cli_serve import serve

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console

    from morphserve.client import Client

cli = typer.Typer(help="morphserve: serve PyTorch models you can edit live.", no_args_is_help=True)


@dataclass(frozen=True)
class _Target:
    """Where the client commands go; set once by the root callback from --url/--token or the environment."""

    url: str | None = None
    token: str | None = None


@cli.callback()
def _root(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="MORPHSERVE_URL",
            show_default=False,
            help="server address for client commands [default: http://127.0.0.1:8000]",
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="MORPHSERVE_TOKEN", show_default=False, help="admin bearer token for edits")
    ] = None,
) -> None:
    """morphserve: serve PyTorch models you can edit live."""
    ctx.obj = _Target(url, token)


cli.command("serve")(serve)  # options generated from Settings (app/morphserve/cli_serve.py)


# -- client plumbing ------------------------------------------------------------------------------------------
def _console(stderr: bool = False) -> Console:
    """A rich console bound to the *current* sys.stdout/stderr (so test runners that swap them see the output)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=stderr)


def _fail(message: str) -> NoReturn:
    """One red line on stderr and exit code 1: what a person at a terminal or a script checking `$?` needs."""
    from rich.text import Text

    line = " ".join(message.split())  # one line even if a message carries newlines
    _console(stderr=True).print(Text(f"error: {line}", style="bold red"))
    raise typer.Exit(1)


@contextmanager
def _client(ctx: typer.Context) -> Iterator[Client]:
    """A client for the server named by --url/--token; any refusal from it becomes `_fail`."""
    from morphserve.client import Client, MorphserveError

    target: _Target = ctx.obj or _Target()
    try:
        with Client(target.url, target.token) as c:
            yield c
    except MorphserveError as e:
        _fail(e.message)


def _print(text: str) -> None:
    """Plain text on stdout, never re-wrapped or interpreted as rich markup (node ids, shapes use brackets)."""
    _console().print(text, markup=False, soft_wrap=True)


def _print_json(data: Any, indent: bool = True) -> None:
    """JSON on stdout for scripts; orjson writes numpy arrays directly and NaN/Inf as null (valid JSON)."""
    import orjson

    option = orjson.OPT_SERIALIZE_NUMPY | (orjson.OPT_INDENT_2 if indent else 0)
    typer.echo(orjson.dumps(data, option=option).decode())


def _read_json(source: str, what: str) -> Any:
    """JSON from a file path, `-` for stdin, or (for options such as --layer) the text itself."""
    try:
        if source == "-":
            text = sys.stdin.read()
        elif source.lstrip().startswith(("{", "[")):
            text = source
        else:
            text = Path(source).read_text()
        return json.loads(text)
    except OSError as e:
        _fail(f"cannot read {what} {source!r}: {e.strerror or e}")
    except json.JSONDecodeError as e:
        _fail(f"{what} is not valid JSON: {e}")


def _write(path: Path, data: bytes | str) -> None:
    try:
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
    except OSError as e:
        _fail(f"cannot write {path}: {e.strerror or e}")
    size = len(data.encode() if isinstance(data, str) else data)
    _print(f"wrote {path} ({size:,} bytes)")


def _shape(shape: list[int]) -> str:
    return "[" + ", ".join("?" if d == -1 else str(d) for d in shape) + "]"


def _tensors(specs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{t['name']} {t['datatype']} {_shape(t['shape'])}" for t in specs)


JsonFlag = Annotated[bool, typer.Option("--json", help="print the server's JSON answer instead of a summary")]
IfVersion = Annotated[int | None, typer.Option(help="refuse (409) unless the model is at this version")]
AllowOutputChange = Annotated[bool, typer.Option(help="allow an edit that changes the outputs' shape or dtype")]


# -- models and inference -------------------------------------------------------------------------------------
@cli.command()
def models(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the served models with their version, signature and size."""
    from rich.table import Table

    with _client(ctx) as c:
        listing = c.models()
    if as_json:
        return _print_json(listing)
    table = Table("model", "version", "inputs", "outputs", "params", "device", "queue")
    for m in listing:
        table.add_row(
            m["name"],
            f"{m['version']} (of {m['versions']})",
            _tensors(m["inputs"]),
            _tensors(m["outputs"]),
            f"{m['params']:,}",
            m["device"],
            str(m["queue_depth"]),
        )
    _console().print(table)


def _random_inputs(signature: list[dict[str, Any]], batch: int, seed: int | None) -> dict[str, np.ndarray]:
    """Random tensors that fit the signature: batch `batch`, other variable dimensions 8; floats ~ N(0, 1),
    integers in [0, 2) so they are valid indices even for embeddings, booleans fair coins."""
    import numpy as np

    from morphserve.wire.oip_codec import OIP_TO_NUMPY

    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for t in signature:
        shape = [batch, *(8 if d == -1 else d for d in t["shape"][1:])]
        dtype = OIP_TO_NUMPY.get(t["datatype"], np.dtype(np.float32))
        if dtype.kind == "f":
            out[t["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            out[t["name"]] = rng.random(shape) < 0.5
        else:
            out[t["name"]] = rng.integers(0, 2, shape).astype(dtype)
    return out


@cli.command()
def infer(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    file: Annotated[
        str | None,
        typer.Argument(
            help='JSON input: a nested list, or {"input_name": nested list}; "-" or nothing reads stdin',
            show_default=False,
        ),
    ] = None,
    random: Annotated[bool, typer.Option("--random", help="send a random input that fits the model")] = False,
    batch: Annotated[int, typer.Option(min=1, help="rows of the --random input")] = 1,
    seed: Annotated[int | None, typer.Option(help="seed of the --random input")] = None,
    version: Annotated[int | None, typer.Option(help="infer on this (resident) version")] = None,
) -> None:
    """Run inference and print {"model", "model_version", "outputs"} as JSON."""
    if random and file is not None:
        _fail("give either an input FILE or --random, not both")
    with _client(ctx) as c:
        if random:
            data: Any = _random_inputs(c.model(model)["inputs"], batch, seed)
        else:
            data = _read_json(file or "-", "input")
            if not isinstance(data, list | dict):
                _fail('the input must be a nested list or an object {"input_name": nested list}')
        result = c.infer(model, data, version=version)
    outputs: Any = result.output if len(result.outputs) == 1 else result.outputs
    _print_json({"model": result.model, "model_version": result.version, "outputs": outputs}, indent=False)


# -- graphs and history -----------------------------------------------------------------------------------------
def _what(node: dict[str, Any]) -> str:
    """`Linear(in_features=64, out_features=128, bias=True)` for layers, `add(alpha=1)` for functions."""
    if node.get("layer"):
        layer = dict(node["layer"])
        kind = layer.pop("type", "?")
        args = ", ".join(f"{k}={v}" for k, v in layer.items() if not isinstance(v, list | dict))
        return f"{kind}({args})"
    if node.get("function"):
        args = ", ".join(f"{k}={v}" for k, v in (node.get("args") or {}).items())
        return f"{node['function']}({args})"
    return ""


@cli.command()
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

    with _client(ctx) as c:
        data = c.graph(model, version, "json" if format == "table" else format)
    if format == "json":
        text = json.dumps(data, indent=2)
        return _write(output, text) if output else typer.echo(text)
    if format in ("dot", "svg"):
        return _write(output, data) if output else typer.echo(data, nl=format == "dot")
    totals = data["totals"]
    title = f"{data['model']} v{data['version']}: {totals['nodes']} nodes, {totals['params']:,} params"
    table = Table("id", "kind", "layer / function", "shape", "params", title=title)
    for n in data["nodes"]:
        table.add_row(
            n["id"],
            n["kind"],
            _what(n),
            f"{n['datatype']} {_shape(n['shape'])}",
            f"{n['params']:,}" if n["params"] else "",
        )
    if output:
        import io

        from rich.console import Console

        text = io.StringIO()
        Console(file=text, width=160, highlight=False).print(table)
        return _write(output, text.getvalue())
    _console().print(table)


def _op_summary(op: dict[str, Any]) -> str:
    kind = op.get("op", "?")
    if kind == "insert":
        where = f"after {op['after']}" if op.get("after") else f"before {op.get('before')}"
        layer = op.get("layer") or {}
        name = f" as {op['name']}" if op.get("name") else ""
        return f"insert {layer.get('type', '?')}{name} {where}"
    if kind == "rollback":
        return f"rollback to {op.get('to', op.get('version', '?'))}"
    if kind == "replace":
        return f"replace {op.get('node')} with {(op.get('layer') or {}).get('type', '?')}"
    if "node" in op:
        return f"{kind} {op['node']}"
    return str(kind)


@cli.command()
def versions(
    ctx: typer.Context, model: Annotated[str, typer.Argument(help="model name")], as_json: JsonFlag = False
) -> None:
    """List a model's versions: parent, what changed, whether resident on the device, pinned."""
    from rich.table import Table

    with _client(ctx) as c:
        data = c.versions(model)
    if as_json:
        return _print_json(data)
    title = f"{model} (current version {data['current']})"
    table = Table("version", "parent", "created", "ops", "resident", "pinned", title=title)
    for v in data["versions"]:
        mark = " *" if v["version"] == data["current"] else ""
        table.add_row(
            f"{v['version']}{mark}",
            str(v["parent"] or ""),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["created_at"])),
            "; ".join(_op_summary(o) for o in v["ops"]),
            "yes" if v["resident"] else "",
            "yes" if v.get("pinned") else "",
        )
    _console().print(table)


@cli.command()
def diff(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    a: Annotated[int, typer.Argument(help="from this version")],
    b: Annotated[int | None, typer.Argument(help="to this version [default: current]", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """What changed between two versions of a model."""
    with _client(ctx) as c:
        d = c.diff(model, a, b)
    if as_json:
        return _print_json(d)
    _print(f"{d['model']}: version {d['from_version']} -> {d['to_version']}")
    _print(f"  added:   {', '.join(d['added']) or '-'}")
    _print(f"  removed: {', '.join(d['removed']) or '-'}")
    changed = ", ".join(f"{ch['id']} ({', '.join(ch['changes'])})" for ch in d["changed"])
    _print(f"  changed: {changed or '-'}")
    if d["outputs_changed"]:
        _print("  the outputs' shape or dtype changed")


@cli.command()
def watch(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Argument(help="model name (none: follow models created and deleted)", show_default=False)
    ] = None,
    since: Annotated[int | None, typer.Option(help="first replay the versions after this one")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per event")] = False,
) -> None:
    """Follow a model's versions as they are committed, live (Ctrl-C stops)."""
    with _client(ctx) as c:
        try:
            for e in c.events(model, since=since):
                if as_json:
                    _print_json({"event": e.kind, "id": e.id, **e.data}, indent=False)
                elif e.kind == "version":
                    d = e.data
                    when = time.strftime("%H:%M:%S", time.localtime(d["created_at"]))
                    what = "; ".join(_op_summary(o) for o in d["ops"]) or "created"
                    parent = f" (from {d['parent']})" if d["parent"] is not None else ""
                    _print(f"{when} {d['model']} version {d['version']}{parent}: {what}")
                elif e.kind in ("model_created", "model_deleted"):
                    extra = f" at version {e.version}" if e.version is not None else ""
                    _print(f"{e.model}: {e.kind.removeprefix('model_')}{extra}")
                else:
                    _print(f"({e.kind}: the stream could not resume where it left off; reload what you derived)")
        except KeyboardInterrupt:
            return


# -- durability --------------------------------------------------------------------------------------------------
@cli.command()
def export(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="version to export")],
    output: Annotated[Path, typer.Option("--output", "-o", help="file to write")],
    format: Annotated[
        Literal["zip", "onnx"], typer.Option("--format", "-f", help="zip (spec.json + weights.safetensors) or onnx")
    ] = "zip",
) -> None:
    """Download one version as a zip (spec + safetensors weights) or an ONNX file."""
    with _client(ctx) as c:
        data = c.export(model, version, format)
    _write(output, data)


@cli.command()
def gc(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    keep: Annotated[int, typer.Option(min=1, help="newest versions to keep (current and pinned always stay)")],
    as_json: JsonFlag = False,
) -> None:
    """Delete a model's old versions and the weight blobs only they used."""
    with _client(ctx) as c:
        r = c.gc(model, keep)
    if as_json:
        return _print_json(r)
    removed = ", ".join(map(str, r["removed_versions"])) or "none"
    _print(f"{model}: removed versions {removed} ({r['removed_blobs']} weight blobs)")


@cli.command()
def pin(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="version to keep through gc")],
) -> None:
    """Protect a version from gc."""
    with _client(ctx) as c:
        c.pin(model, version)
    _print(f"{model}: version {version} pinned")


@cli.command()
def unpin(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="version gc may remove again")],
) -> None:
    """Let gc remove a version again."""
    with _client(ctx) as c:
        c.unpin(model, version)
    _print(f"{model}: version {version} unpinned")


from morphserve.capture.command import import_model  # noqa: E402 - the client-side import command (issue 12)
from morphserve.cli_edits import edit_cli  # noqa: E402 - the edit commands, which use the helpers above
from morphserve.cli_models import create  # noqa: E402 - uploading a bundle (issue 12)

cli.command("import")(import_model)
cli.command("create")(create)
cli.add_typer(edit_cli, name="edit")


def main() -> None:
    cli()
