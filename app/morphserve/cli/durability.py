"""`morphserve export`, `gc`, `pin` and `unpin`: taking versions out, and which ones the server keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from morphserve.cli.common import JsonFlag, client, print_json, print_text, write


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
    with client(ctx) as c:
        data = c.export(model, version, format)
    write(output, data)


def gc(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    keep: Annotated[int, typer.Option(min=1, help="newest versions to keep (current and pinned always stay)")],
    as_json: JsonFlag = False,
) -> None:
    """Delete a model's old versions and the weight blobs only they used."""
    with client(ctx) as c:
        r = c.gc(model, keep)
    if as_json:
        return print_json(r)
    removed = ", ".join(map(str, r["removed_versions"])) or "none"
    print_text(f"{model}: removed versions {removed} ({r['removed_blobs']} weight blobs)")


def pin(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="version to keep through gc")],
) -> None:
    """Protect a version from gc."""
    with client(ctx) as c:
        c.pin(model, version)
    print_text(f"{model}: version {version} pinned")


def unpin(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="version gc may remove again")],
) -> None:
    """Let gc remove a version again."""
    with client(ctx) as c:
        c.unpin(model, version)
    print_text(f"{model}: version {version} unpinned")


def register(app: typer.Typer) -> None:
    for command in (export, gc, pin, unpin):
        app.command()(command)
