"""`morphserve import SOURCE --input NAME:DATATYPE:SHAPE ... -o model.zip [--name NAME]`.

This module is imported by the CLI at start-up, so it imports torch and the capture code only when the command
runs. Any failure is one red `error: ...` line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer


def import_model(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            help="path/to/file.py:ATTR or package.module:ATTR (an nn.Module, or a zero-argument callable returning one)"
        ),
    ],
    inputs: Annotated[
        list[str],
        typer.Option(
            "--input",
            help="NAME:DATATYPE:SHAPE per forward argument, in order, "
            "e.g. input:FP32:-1,3,224,224 (-1: batch or variable)",
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="the bundle to write (zip: spec.json + weights.safetensors)")
    ],
    name: Annotated[str | None, typer.Option(help="model name [default: the file or attribute name]")] = None,
    upload: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="then upload the bundle to the server (--url, --token) as model NAME"),
    ] = None,
) -> None:
    """Capture a PyTorch model on this machine as an editable morphserve bundle (serve it with --model NAME=PATH,
    or upload it with --upload NAME / `morphserve create NAME PATH`)."""
    from morphserve.cli import _fail

    try:
        from morphserve.capture import CaptureError, capture, load_module, write_bundle
        from morphserve.graph.errors import GraphError
    except ImportError as e:  # pragma: no cover - a broken install
        _fail(f"cannot load the capture code: {e}")
    model_name = name or _default_name(source)
    try:
        with _silenced():
            module = load_module(source)
            version = capture(module, inputs, name=model_name)
        write_bundle(version, output)
    except CaptureError as e:
        _fail(e.message)
    except GraphError as e:
        _fail(e.message)
    except OSError as e:
        _fail(f"cannot write {output}: {e}")
    layers = sum(1 for n in version.spec.nodes if n.layer is not None)
    typer.echo(
        f"wrote {output}: model {model_name!r}, {len(version.spec.nodes)} nodes ({layers} layers), "
        f"{version.total_params():,} parameters"
    )
    if upload is not None:
        from morphserve.cli_models import served_line, upload_bundle

        typer.echo(served_line(upload_bundle(ctx, upload, output)))


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """File descriptors 1 and 2 to /dev/null while torch.export runs: on failure it dumps graphs from places that
    bypass sys.stdout/sys.stderr, and the user should see one line from us, not pages of torch internals."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _default_name(source: str) -> str:
    import re

    target, _, attr = source.rpartition(":")
    stem = Path(target).stem if target.endswith(".py") else attr.split(".")[-1]
    name = re.sub(r"\W", "_", stem) or "model"
    return name if not name[0].isdigit() else "_" + name
