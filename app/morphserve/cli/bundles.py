"""`morphserve import SOURCE ... -o model.zip` and `morphserve create NAME model.zip`: models from files.

`import` captures a PyTorch model on this machine (morphserve.capture does the work and raises CaptureError; torch
is imported only when the command runs); `create` uploads a bundle, streamed from the file in 1 MiB chunks behind
a progress bar on stderr, never read whole. `import --upload NAME` does both.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Annotated, Any

import typer

from morphserve.cli.common import JsonFlag, client, console, fail, print_json, print_text
from morphserve.cli.describe import served_line

_IMPORT_HINT = "capture it first with `morphserve import path/to/model.py:ATTR --input ... -o model.zip`"


def check_bundle(path: Path) -> None:
    """`fail` unless `path` is a bundle (a zip with spec.json), before uploading it: a checkpoint from `torch.save`
    is a zip too, and the server would only say what it lacks after the whole upload."""
    try:
        with zipfile.ZipFile(path) as z:
            has_spec = "spec.json" in z.namelist()
    except zipfile.BadZipFile:
        has_spec = False
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror or e}")
    if not has_spec:
        fail(
            f"{path} is not a morphserve bundle (a zip of spec.json and weights.safetensors); to serve a PyTorch "
            f"model or checkpoint, {_IMPORT_HINT}"
        )


def upload_bundle(ctx: typer.Context, name: str, bundle: Path) -> dict[str, Any]:
    """Upload `bundle` to the server of --url/--token as model `name`; its model information, or `fail`."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (
        TextColumn(f"uploading {bundle.name}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with client(ctx) as c, Progress(*columns, console=console(stderr=True), transient=True) as bar:
        task = bar.add_task("upload", total=bundle.stat().st_size)
        return c.create_from_bundle(
            name, bundle, progress=lambda sent, total: bar.update(task, completed=sent, total=total)
        )


def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="name of the new model")],
    bundle: Annotated[
        Path,
        typer.Argument(
            help="bundle zip (spec.json + weights.safetensors), as `morphserve import` or `export` writes it",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Serve a new model from a bundle file, uploaded to the server (admin token)."""
    check_bundle(bundle)
    info = upload_bundle(ctx, name, bundle)
    if as_json:
        return print_json(info)
    print_text(served_line(info))


def import_model(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            help="path/to/file.py:ATTR or package.module:ATTR (an nn.Module, or a zero-argument callable returning "
            "one), or model.onnx (needs the onnx extra)"
        ),
    ],
    inputs: Annotated[
        list[str],
        typer.Option(
            "--input",
            help="NAME:DATATYPE:SHAPE per tensor argument of forward, e.g. input_ids:INT64:-1,-1 (-1: the batch, or "
            "any variable size); bound to the forward parameter called NAME, else by position",
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="the bundle to write (zip: spec.json + weights.safetensors)")
    ],
    name: Annotated[str | None, typer.Option(help="model name \\[default: the file or attribute name]")] = None,
    upload: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="then upload the bundle to the server (--url, --token) as model NAME"),
    ] = None,
) -> None:
    """Capture a PyTorch model on this machine as an editable morphserve bundle (serve it with --model NAME=PATH,
    or upload it with --upload NAME / `morphserve create NAME PATH`)."""
    try:
        from morphserve.capture.importer import import_to_bundle
        from morphserve.capture.refusals import CaptureError
    except ImportError as e:  # pragma: no cover - a broken install (torch missing)
        fail(f"cannot load the capture code: {e}")
    try:
        done = import_to_bundle(source, inputs, output, name=name)
    except CaptureError as e:
        fail(e.message)
    typer.echo(
        f"wrote {output}: model {done.name!r}, {done.nodes} nodes ({done.layers} layers), {done.params:,} parameters"
    )
    for note in done.notes:
        typer.echo(f"note: {note}")
    if upload is not None:
        typer.echo(served_line(upload_bundle(ctx, upload, output)))


def register(app: typer.Typer) -> None:
    app.command("import")(import_model)
    app.command("create")(create)
