"""ONNX export of a version (for Netron and other runtimes), where torch.onnx can express the graph.

`onnx` and `onnxscript` are an optional extra; without them the caller gets `OnnxUnavailable`.
"""

from __future__ import annotations

import io
import logging
import warnings

import torch

from .errors import SpecError, short_message
from .version import ModelVersion


class OnnxUnavailable(Exception):
    """The optional ONNX dependencies are not installed."""


def to_onnx(v: ModelVersion) -> bytes:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise OnnxUnavailable(
            f"ONNX export needs the optional extra: pip install 'morphserve[onnx]' ({e.name})"
        ) from None
    args = tuple(torch.zeros(t.example_shape(batch=2), dtype=t.dtype) for t in v.inputs)
    batch = torch.export.Dim("batch", min=1)
    shapes = tuple({0: batch} for _ in args)
    buf = io.BytesIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                v.graph_module,
                args,
                dynamo=True,
                dynamic_shapes=shapes,
                input_names=[t.name for t in v.inputs],
                output_names=[o.name for o in v.outputs],
                verbose=False,
            )
            assert program is not None
            # torch annotates a path, but the model is written by onnx_ir, which takes a binary file object as well.
            program.save(buf)  # type: ignore[arg-type]
    except Exception as e:  # noqa: BLE001 - the exporter raises many types; all mean "not expressible"
        raise SpecError(f"torch.onnx cannot export version {v.version} of {v.model!r}: {short_message(e)}") from None
    return buf.getvalue()
