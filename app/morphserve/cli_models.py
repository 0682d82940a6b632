"""`morphserve create NAME model.zip`, and the upload behind `morphserve import ... --upload NAME`.

Kept out of app/morphserve/cli.py (which registers `create` with one line) so that the command line grows by modules.
Like every client command, it calls one `morphserve.client.Client` method; the bundle is streamed from the file in 1 MiB
chunks behind a progress bar on stderr, never read whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def upload_bundle(ctx: typer.Context, name: str, bundle: Path) -> dict[str, Any]:
    """Upload `bundle` to the server of --url/--token as model `name`; its model information, or `_fail`."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from morphserve.cli import _client, _console

    columns = (
        TextColumn(f"uploading {bundle.name}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with _client(ctx) as c, Progress(*columns, console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task("upload", total=bundle.stat().st_size)
        return c.create_from_bundle(
            name, bundle, progress=lambda sent, total: bar.update(task, completed=sent, total=total)
        )


def served_line(info: dict[str, Any]) -> str:
    """`mine: serving version 1 (input FP32 [?, 3, 32, 32] -> logits FP32 [?, 10], 12,345 params) on cpu`."""
    from morphserve.cli import _tensors

    return (
        f"{info['name']}: serving version {info['version']} ({_tensors(info['inputs'])} -> "
        f"{_tensors(info['outputs'])}, {info['params']:,} params) on {info['device']}"
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
    as_json: Annotated[
        bool, typer.Option("--json", help="print the server's JSON answer instead of a summary")
    ] = False,
) -> None:
    """Serve a new model from a bundle file, uploaded to the server (admin token)."""
    from morphserve.cli import _print, _print_json

    info = upload_bundle(ctx, name, bundle)
    if as_json:
        return _print_json(info)
    _print(served_line(info))
