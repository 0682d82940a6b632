"""`morphserve edit ...`: the live-edit commands (insert, remove, replace, weights, rollback, apply, promote).

Each parses its arguments, calls one `Client` method and prints the new version in one line (or the JSON answer
with --json); `register` adds them to the root command as the `edit` group. Every edit takes `--stage`: the
version is committed but not current until `edit promote` (or a rollout, `morphserve rollout`) makes it so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from morphserve.cli.common import (
    AllowOutputChange,
    IfVersion,
    JsonFlag,
    Stage,
    client,
    console,
    fail,
    print_json,
    print_text,
    read_json,
)

edit_cli = typer.Typer(
    help="Edit a served model live: insert, remove, replace, weights, rollback, apply; --stage, promote.",
    no_args_is_help=True,
)


def _edit_done(r: dict[str, Any], as_json: bool) -> None:
    """`digits: version 1 -> 2 (added linear_1) in 12.3 ms`, or the whole answer with --json."""
    if as_json:
        return print_json(r)
    d = r["diff"]
    parts = [
        f"added {', '.join(d['added'])}" if d["added"] else "",
        f"removed {', '.join(d['removed'])}" if d["removed"] else "",
        f"changed {', '.join(ch['id'] for ch in d['changed'])}" if d["changed"] else "",
    ]
    what = "; ".join(p for p in parts if p) or "no graph change"
    if r.get("staged"):
        print_text(
            f"{r['model']}: version {r['version']} staged ({what}, from version {r['previous_version']}) "
            f"in {r['timings_ms']['total']:.1f} ms; version {r['previous_version']} stays current"
        )
        return None
    dry = "dry run, nothing committed: " if r.get("dry_run") else ""
    print_text(
        f"{r['model']}: version {r['previous_version']} -> {r['version']} ({dry}{what}) "
        f"in {r['timings_ms']['total']:.1f} ms"
    )


def _layer(text: str) -> dict[str, Any]:
    layer = read_json(text, "--layer")
    if not isinstance(layer, dict):
        fail('--layer must be a JSON object such as \'{"type": "Linear", "in_features": 64, "out_features": 64}\'')
    return layer


LayerOpt = Annotated[
    str,
    typer.Option(
        "--layer",
        help='layer spec as JSON (or a JSON file), e.g. \'{"type": "Linear", "in_features": 64, "out_features": 64}\'',
    ),
]


@edit_cli.command("insert")
def edit_insert(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    layer: LayerOpt,
    after: Annotated[str | None, typer.Option(help="insert after this node")] = None,
    before: Annotated[str | None, typer.Option(help="insert before this node")] = None,
    name: Annotated[str | None, typer.Option(help="id of the new node \\[default: generated]")] = None,
    init: Annotated[
        Literal["default", "identity"],
        typer.Option(help="identity: start as the identity function, so outputs do not change"),
    ] = "default",
    seed: Annotated[int, typer.Option(min=0, help="seed of the default initialisation")] = 0,
    if_version: IfVersion = None,
    allow_output_change: AllowOutputChange = False,
    stage: Stage = False,
    as_json: JsonFlag = False,
) -> None:
    """Insert a layer after (or before) a node."""
    if (after is None) == (before is None):
        fail("give exactly one of --after NODE or --before NODE")
    with client(ctx) as c:
        r = c.insert(
            model,
            _layer(layer),
            after=after,
            before=before,
            name=name,
            init=init,
            seed=seed,
            if_version=if_version,
            allow_output_change=allow_output_change,
            stage=stage,
        )
    _edit_done(r, as_json)


@edit_cli.command("remove")
def edit_remove(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    node: Annotated[str, typer.Argument(help="node to remove")],
    if_version: IfVersion = None,
    allow_output_change: AllowOutputChange = False,
    stage: Stage = False,
    as_json: JsonFlag = False,
) -> None:
    """Remove a node, connecting its input to its consumers."""
    with client(ctx) as c:
        r = c.remove(model, node, if_version=if_version, allow_output_change=allow_output_change, stage=stage)
    _edit_done(r, as_json)


@edit_cli.command("replace")
def edit_replace(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    node: Annotated[str, typer.Argument(help="node whose layer to replace")],
    layer: LayerOpt,
    keep_weights: Annotated[bool, typer.Option(help="copy the old layer's weights where shapes match")] = False,
    seed: Annotated[int, typer.Option(min=0, help="seed of the new layer's initialisation")] = 0,
    if_version: IfVersion = None,
    allow_output_change: AllowOutputChange = False,
    stage: Stage = False,
    as_json: JsonFlag = False,
) -> None:
    """Replace a node's layer (e.g. a new head)."""
    with client(ctx) as c:
        r = c.replace(
            model,
            node,
            _layer(layer),
            keep_weights=keep_weights,
            seed=seed,
            if_version=if_version,
            allow_output_change=allow_output_change,
            stage=stage,
        )
    _edit_done(r, as_json)


@edit_cli.command("weights")
def edit_weights(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    node: Annotated[str, typer.Argument(help="layer node whose parameters to overwrite")],
    file: Annotated[
        Path,
        typer.Argument(
            help="safetensors file; tensor names as the layer's parameters", exists=True, dir_okay=False, readable=True
        ),
    ],
    if_version: IfVersion = None,
    stage: Stage = False,
    as_json: JsonFlag = False,
) -> None:
    """Upload a layer's weights from a safetensors file (with a progress bar)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (
        TextColumn(f"{node} weights"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with client(ctx) as c, Progress(*columns, console=console(stderr=True), transient=True) as bar:
        task = bar.add_task("upload", total=file.stat().st_size)
        r = c.set_weights(
            model,
            node,
            file,
            progress=lambda sent, total: bar.update(task, completed=sent, total=total),
            if_version=if_version,
            stage=stage,
        )
    _edit_done(r, as_json)


@edit_cli.command("rollback")
def edit_rollback(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="version to make current again")],
    if_version: IfVersion = None,
    stage: Stage = False,
    as_json: JsonFlag = False,
) -> None:
    """Make an earlier version current again (as a new version)."""
    with client(ctx) as c:
        r = c.rollback(model, version, if_version=if_version, stage=stage)
    _edit_done(r, as_json)


@edit_cli.command("apply")
def edit_apply(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    ops: Annotated[str, typer.Argument(help='JSON list of edit ops (a file, "-" for stdin, or the JSON itself)')],
    dry_run: Annotated[bool, typer.Option(help="validate and show the diff without committing")] = False,
    if_version: IfVersion = None,
    allow_output_change: AllowOutputChange = False,
    stage: Stage = False,
    as_json: JsonFlag = False,
) -> None:
    """Apply a list of edit ops atomically (all or none)."""
    data = read_json(ops, "ops")
    if isinstance(data, dict) and "ops" in data:
        data = data["ops"]
    if not isinstance(data, list):
        fail('ops must be a JSON list such as [{"op": "remove", "node": "relu2"}]')
    with client(ctx) as c:
        r = c.edit(
            model, data, if_version=if_version, dry_run=dry_run, allow_output_change=allow_output_change, stage=stage
        )
    _edit_done(r, as_json)


@edit_cli.command("promote")
def edit_promote(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(min=1, help="a committed version (a staged one) to make current")],
    as_json: JsonFlag = False,
) -> None:
    """Make a staged version current (refused while a rollout runs: `morphserve rollout promote` ends it)."""
    with client(ctx) as c:
        r = c.promote(model, version)
    _edit_done(r, as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(edit_cli, name="edit")
