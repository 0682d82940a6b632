"""`morphserve import` without the command line: load SOURCE, capture it, write the bundle.

The CLI (morphserve.cli.bundles) parses the arguments and prints; this module does the work and reports every
failure as one `CaptureError`, so that capture needs nothing of the CLI and the CLI shows one red line.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from morphserve.graph.bundle import write_bundle
from morphserve.graph.errors import GraphError

from .api import capture_with_notes
from .onnx import is_onnx, load_onnx
from .refusals import CaptureError
from .source import load_module


@dataclass(frozen=True)
class Imported:
    """What was written, for the one line the CLI prints."""

    name: str
    nodes: int
    layers: int
    params: int
    notes: tuple[str, ...] = ()  # what the user should know (a cache turned off, tied weights kept as one)


def import_to_bundle(source: str, inputs: Sequence[str], output: Path, name: str | None = None) -> Imported:
    """Capture the module SOURCE names (`path/to/file.py:ATTR`, `package.module:ATTR`, or an ONNX file
    `model.onnx`) with `inputs` (`NAME:DATATYPE:SHAPE` each) and write it to `output` as a bundle; CaptureError for
    anything that fails."""
    model_name = name or default_name(source)
    try:
        with _silenced():
            outputs: list[str] | None = None
            if is_onnx(source):
                module, outputs = load_onnx(Path(source))
            else:
                module = load_module(source)
            captured = capture_with_notes(module, inputs, name=model_name, output_names=outputs)
        version = captured.version
        write_bundle(version, output)
    except GraphError as e:
        raise CaptureError(e.message) from e
    except OSError as e:
        raise CaptureError(f"cannot write {output}: {e.strerror or e}") from e
    layers = sum(1 for n in version.spec.nodes if n.layer is not None)
    return Imported(model_name, len(version.spec.nodes), layers, version.total_params(), tuple(captured.notes))


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


def default_name(source: str) -> str:
    """The model name when none is given: the file's stem or the attribute's last part, as an identifier."""
    target, _, attr = source.rpartition(":")
    if is_onnx(source):
        stem = Path(source).stem
    else:
        stem = Path(target).stem if target.endswith(".py") else attr.split(".")[-1]
    name = re.sub(r"\W", "_", stem) or "model"
    return name if not name[0].isdigit() else "_" + name
