"""`morphserve models` and `morphserve infer`: what is served, and running it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from morphserve.cli.common import JsonFlag, client, console, fail, print_json, read_json
from morphserve.cli.describe import tensors

if TYPE_CHECKING:
    import numpy as np


def models(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the served models with their version, signature and size."""
    from rich.table import Table

    with client(ctx) as c:
        listing = c.models()
    if as_json:
        return print_json(listing)
    table = Table("model", "version", "inputs", "outputs", "params", "device", "queue")
    for m in listing:
        table.add_row(
            m["name"],
            f"{m['version']} (of {m['versions']})",
            tensors(m["inputs"]),
            tensors(m["outputs"]),
            f"{m['params']:,}",
            m["device"],
            str(m["queue_depth"]),
        )
    console().print(table)


def _random_inputs(signature: list[dict[str, Any]], batch: int, seed: int | None) -> dict[str, np.ndarray]:
    """Random tensors that fit the signature: batch `batch`, other variable dimensions 8; floats ~ N(0, 1),
    integers in [0, 2) so they are valid indices even for embeddings, booleans fair coins."""
    import numpy as np

    from morphserve.graph.datatypes import OIP_TO_NUMPY

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
    request_id: Annotated[
        str | None,
        typer.Option(help="send this X-Request-Id (morphserve feedback labels the request by it later)"),
    ] = None,
) -> None:
    """Run inference and print {"model", "model_version", "outputs", "request_id"} as JSON."""
    if random and file is not None:
        fail("give either an input FILE or --random, not both")
    with client(ctx) as c:
        if random:
            data: Any = _random_inputs(c.model(model)["inputs"], batch, seed)
        else:
            data = read_json(file or "-", "input")
            if not isinstance(data, list | dict):
                fail('the input must be a nested list or an object {"input_name": nested list}')
        result = c.infer(model, data, version=version, request_id=request_id)
    outputs: Any = result.output if len(result.outputs) == 1 else result.outputs
    answer = {"model": result.model, "model_version": result.version, "outputs": outputs}
    print_json({**answer, "request_id": result.request_id}, indent=False)


def register(app: typer.Typer) -> None:
    app.command()(models)
    app.command()(infer)
