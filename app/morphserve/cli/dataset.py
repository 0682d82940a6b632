"""`morphserve dataset put|ls|rm`: the labelled data a rollout scores its candidate on (`--eval-dataset`) and a fit
job trains on (`morphserve fit --dataset`).

A dataset is a safetensors file: each model input under its name (samples in dimension 0), plus `labels` (integer
class indices) or `targets` (float, shaped like the first output). `put` streams the file, never reading it whole.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from morphserve.cli.common import JsonFlag, client, console, print_json, print_text
from morphserve.cli.describe import shape

if TYPE_CHECKING:
    from morphserve.client import Dataset

dataset_cli = typer.Typer(
    help="Labelled datasets a rollout scores its candidate on, and a fit job trains on.", no_args_is_help=True
)

ModelArg = Annotated[str, typer.Argument(help="model name")]
NameArg = Annotated[str, typer.Argument(help="dataset name (letters, digits, . _ -)")]


def _kind(d: Dataset) -> str:
    return f"labels ({d.classes} classes)" if d.kind == "labels" and d.classes else d.kind


def _inputs(d: Dataset) -> str:
    return ", ".join(f"{name} {dt} {shape(dims)}" for name, (dt, dims) in d.inputs.items())


def _summary(d: Dataset) -> str:
    """`400 rows, labels (10 classes), input FP32 [400, 64], 103,168 bytes`."""
    return f"{d.rows:,} rows, {_kind(d)}, {_inputs(d)}, {d.bytes:,} bytes"


@dataset_cli.command("put")
def dataset_put(
    ctx: typer.Context,
    model: ModelArg,
    name: NameArg,
    file: Annotated[
        Path,
        typer.Argument(
            help="safetensors file: the inputs by name, and labels or targets",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Store a dataset (replacing one of that name); refused, naming the tensor, when it does not fit the model."""
    with client(ctx) as c:
        d = c.put_dataset(model, name, file)
    if as_json:
        return print_json(asdict(d))
    print_text(f"{model}: dataset {d.name} stored ({_summary(d)})")


@dataset_cli.command("ls")
def dataset_ls(ctx: typer.Context, model: ModelArg, as_json: JsonFlag = False) -> None:
    """List a model's datasets."""
    from rich.table import Table

    with client(ctx) as c:
        found = c.datasets(model)
    if as_json:
        return print_json([asdict(d) for d in found])
    if not found:
        return print_text(f"{model}: no datasets")
    table = Table("name", "rows", "kind", "inputs", "bytes", "updated", title=f"{model} datasets")
    for d in found:
        table.add_row(
            d.name,
            f"{d.rows:,}",
            _kind(d),
            _inputs(d),
            f"{d.bytes:,}",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.updated_at)),
        )
    console().print(table)


@dataset_cli.command("rm")
def dataset_rm(ctx: typer.Context, model: ModelArg, name: NameArg) -> None:
    """Remove a dataset."""
    with client(ctx) as c:
        c.delete_dataset(model, name)
    print_text(f"{model}: dataset {name} removed")


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_cli, name="dataset")
