"""Capture a user's nn.Module as a morphserve model version (client side only).

Why torch.export (non-strict) and not torch.fx symbolic tracing: fx runs forward on proxies, so any Python that
looks at a size or a value (`if x.shape[1] != d`, `x.view(x.size(0), -1)`, the shape and mask logic of Hugging
Face models) fails or bakes in the example; fx also sees only the calls, not what each module does. Non-strict
export runs forward as ordinary Python on fake tensors with symbolic sizes, records every ATen operation with
the module stack and source line that produced it, keeps the batch (and any -1 dimension) symbolic, and says
precisely why when something cannot be one graph (data-dependent control flow, a size it had to specialise).
It needs no cooperation from the model's code, which is what lets a Hugging Face model import unchanged. Strict
mode (TorchDynamo) would add bytecode-level restrictions without helping here, so it is not used, and there is
no fx fallback: a model export cannot capture is refused with export's reason rather than captured differently.

The exported program never leaves this machine: it is walked into a spec (catalogue layers + allowlisted
functions + parameter nodes) and safetensors weights, the bundle the server already reads.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn
from torch.export import Dim

from morphserve.graph.errors import GraphError
from morphserve.graph.spec import TensorSpec, parse_spec
from morphserve.graph.version import ModelVersion, make_version

from .marks import marked
from .refusals import CaptureError, at, export_failure, user_code_failure, where_exception
from .walk import Walker

EXAMPLE_BATCH = 2
EXAMPLE_SIZE = 32  # what a -1 dimension other than the batch is during capture (the shape probes use 32 too)
_QUIET = (
    "torch._export",
    "torch.export",
    "torch.fx.experimental.symbolic_shapes",
    "torch._dynamo",
    "torch._subclasses.fake_tensor",
    "torch.fx._symbolic_trace",
)


def parse_input(text: str | TensorSpec | dict[str, Any]) -> TensorSpec:
    """`NAME:DATATYPE:SHAPE` (e.g. `input:FP32:-1,3,224,224`), a TensorSpec or its dict -> TensorSpec."""
    if isinstance(text, TensorSpec):
        return text
    try:
        if isinstance(text, dict):
            return TensorSpec.model_validate(text)
        name, datatype, shape = text.split(":")
        return TensorSpec(name=name, datatype=datatype.upper(), shape=tuple(int(d) for d in shape.split(",")))
    except (ValueError, TypeError) as e:
        msg = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
        raise CaptureError(
            f"--input {text!r}: expected NAME:DATATYPE:SHAPE like input:FP32:-1,3,224,224 ({msg})"
        ) from None


def example_inputs(specs: Sequence[TensorSpec], batch: int = EXAMPLE_BATCH, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs of the signature with every -1 set (batch `batch`, other dims EXAMPLE_SIZE); ints are 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in specs:
        shape = [batch if i == 0 else EXAMPLE_SIZE if d == -1 else d for i, d in enumerate(t.shape)]
        if t.dtype.is_floating_point:
            out.append(torch.randn(shape, generator=g).to(t.dtype))
        elif t.dtype == torch.bool:
            out.append(torch.randint(0, 2, shape, generator=g).bool())
        else:
            out.append(torch.randint(0, 2, shape, generator=g).to(t.dtype))
    return tuple(out)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.export prints graphs and warnings on failure; the user gets one line from us instead."""
    levels = {n: logging.getLogger(n).level for n in _QUIET}
    for n in _QUIET:
        logging.getLogger(n).setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, lvl in levels.items():
            logging.getLogger(n).setLevel(lvl)


@contextlib.contextmanager
def _no_custom_autograd() -> Iterator[None]:
    """Refuse custom torch.autograd.Function subclasses: export would inline a forward that may rely on
    custom kernels or saved state, and the backward (the reason such a class exists) would be silently lost."""
    original = torch.autograd.Function.apply

    def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
        if not cls.__module__.startswith("torch"):
            import sys

            f = sys._getframe(1)
            raise CaptureError(
                f"custom autograd Function {cls.__name__} at {f.f_code.co_filename}:{f.f_lineno}: "
                "write its forward as plain torch operations to import it"
            )
        return original.__func__(cls, *args, **kwargs)  # type: ignore[attr-defined]

    torch.autograd.Function.apply = classmethod(apply)  # type: ignore[assignment, method-assign]
    try:
        yield
    finally:
        torch.autograd.Function.apply = original  # type: ignore[method-assign]


def capture(
    module: nn.Module, inputs: Sequence[str | TensorSpec | dict[str, Any]], *, name: str = "model", check: bool = True
) -> ModelVersion:
    """Version 1 of `module` as an editable graph, in eval mode. `inputs`: one per forward argument, in order.

    With `check`, the captured graph is run on the example inputs and must reproduce the module's outputs.
    Raises CaptureError with a one-line reason naming the construct and the line of code.
    """
    specs = [parse_input(t) for t in inputs]
    module.eval()
    examples = example_inputs(specs)
    dynamic = tuple({i: Dim.DYNAMIC for i, d in enumerate(t.shape) if d == -1} for t in specs)
    with _quiet(), _no_custom_autograd():
        try:
            with torch.no_grad():
                expected = module(*examples)
        except CaptureError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's forward failing on a valid input of its signature
            raise user_code_failure(e, f"forward on inputs of shapes {[list(x.shape) for x in examples]}") from None
        with marked(module) as calls:
            try:
                ep = torch.export.export(module, examples, dynamic_shapes=dynamic, strict=False)
            except Exception as e:  # noqa: BLE001 - export raises many types; each becomes one line
                raise export_failure(e) from None
        spec, modules = Walker(ep, module, calls, specs, name).run()
    try:
        version = make_version(name, 1, None, parse_spec(spec), modules)
    except GraphError as e:
        raise CaptureError(f"the captured graph is invalid: {e.message}") from None
    if check:
        _check(version, expected, examples)
    return version


def _check(version: ModelVersion, expected: Any, examples: tuple[torch.Tensor, ...]) -> None:
    want = [t for t in torch.utils._pytree.tree_leaves(expected) if isinstance(t, torch.Tensor)]
    got = version.run(*examples)
    if len(want) != len(got):
        raise CaptureError(f"the captured graph returns {len(got)} tensors, the model {len(want)}")
    for o, w, g in zip(version.outputs, want, got, strict=True):
        if w.shape != g.shape or w.dtype != g.dtype:
            raise CaptureError(
                f"output {o.name!r}: the captured graph gives {g.dtype} {list(g.shape)}, the model "
                f"{w.dtype} {list(w.shape)}"
            )
        if w.is_floating_point():
            tol = 1e-4 * max(1.0, float(w.abs().max()) if w.numel() else 1.0)
            diff = float((w - g).abs().max()) if w.numel() else 0.0
            if not diff <= tol:
                raise CaptureError(
                    f"output {o.name!r}: the captured graph differs from the model by {diff:.3g} "
                    "(a capture bug: please report it with the model)"
                )
        elif not torch.equal(w, g):
            raise CaptureError(f"output {o.name!r}: the captured graph gives other values than the model")


__all__ = ["CaptureError", "at", "capture", "example_inputs", "parse_input", "where_exception"]
