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

The exported program is lowered to Core ATen (lower.py) and never leaves this machine: it is walked into a spec
(catalogue layers, Core ATen function nodes, size and parameter nodes) and safetensors weights, the bundle the
server reads.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import torch
import torch.fx as fx
from pydantic import ValidationError
from torch import nn
from torch.export import Dim, ExportedProgram
from torch.export.graph_signature import InputKind

from morphserve.graph.errors import GraphError
from morphserve.graph.spec import TensorSpec, parse_spec
from morphserve.graph.version import ModelVersion, make_version

from . import hf
from .binding import Bound, bind
from .lower import lower
from .marks import marked
from .refusals import CaptureError, at, export_failure, user_code_failure, where_exception
from .walk import CACHES, Walker

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


def example_inputs(
    specs: Sequence[TensorSpec], batch: int = EXAMPLE_BATCH, seed: int = 0, size: int = EXAMPLE_SIZE
) -> tuple[torch.Tensor, ...]:
    """Inputs of the signature with every -1 set (batch `batch`, other dims `size`, within the input's bounds).

    Integer inputs are 0 or 1 (valid ids for any vocabulary), masks are all ones and type or position ids zeros
    (a random mask can leave a row with nothing to attend to, and a model with one token type has only type 0)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in specs:
        shape = list(t.example_shape(batch=batch, size=size))
        name = t.name.lower()
        if t.dtype.is_floating_point:
            out.append(torch.randn(shape, generator=g).to(t.dtype))
        elif "mask" in name:
            out.append(torch.ones(shape, dtype=t.dtype))
        elif "type" in name or "position" in name:
            out.append(torch.zeros(shape, dtype=t.dtype))
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


@dataclass
class Captured:
    """A capture's result and what the user should be told about it (one line each)."""

    version: ModelVersion
    notes: list[str]


def capture(
    module: nn.Module, inputs: Sequence[str | TensorSpec | dict[str, Any]], *, name: str = "model", check: bool = True
) -> ModelVersion:
    """Version 1 of `module` as an editable graph, in eval mode. `inputs`: one per tensor argument of forward,
    bound by name where forward has a parameter of that name, else by position (binding.py).

    With `check`, the captured graph is run on the example inputs and must reproduce the module's outputs.
    Raises CaptureError with a one-line reason naming the construct and the line of code.
    """
    return capture_with_notes(module, inputs, name=name, check=check).version


def capture_with_notes(
    module: nn.Module,
    inputs: Sequence[str | TensorSpec | dict[str, Any]],
    *,
    name: str = "model",
    check: bool = True,
    output_names: Sequence[str] | None = None,
) -> Captured:
    """`capture`, with the notes for the user (a cache turned off, tied weights kept as one). `output_names`, when
    given (an ONNX model's), name the outputs in order instead of the names forward's result gives them."""
    specs = [parse_input(t) for t in inputs]
    notes: list[str] = []
    module.eval()
    bound = bind(module, specs)
    hf.prepare(module, bound, notes)
    with _quiet(), _no_custom_autograd():
        examples, expected = _run_eagerly(module, specs, bound)
        args, kwargs = bound.call_args(examples)
        dynamic = _dynamic_shapes(specs, bound)
        with marked(module) as calls:
            try:
                ep = torch.export.export(_rooted(module), args, kwargs, dynamic_shapes=dynamic, strict=False)
            except Exception as e:  # noqa: BLE001 - export raises many types; each becomes one line
                raise export_failure(e) from None
            try:  # still inside marked(): the opaque calls' shape rules read the modules it registered
                ep = lower(ep)
            except Exception as e:  # noqa: BLE001 - a decomposition that fails is a capture limit, named in one line
                raise export_failure(e, "lowering to Core ATen") from None
        placeholders = _placeholders(ep, specs)
        bounded = [_with_bounds(t, ep, p) for t, p in zip(specs, _user_placeholders(ep), strict=True)]
        walker = Walker(ep, module, calls, bounded, placeholders, name, notes, prefix=ROOT + ".")
        spec, modules = walker.run(output_names)
    try:
        version = make_version(name, 1, None, parse_spec(spec), modules)
    except GraphError as e:
        raise CaptureError(f"the captured graph is invalid: {e.message}") from None
    if check:
        _check(version, expected, examples)
    return Captured(version, notes)


ROOT: Final = "model"


def _rooted(module: nn.Module) -> nn.Module:
    """`module` one level down (its paths start with `model.`), with its own forward signature.

    Lowering rebuilds the program as a GraphModule holding every parameter at its path; a user's submodule called
    `meta`, `graph` or `training` would collide with an attribute of GraphModule there. One level down, nothing
    does; the walk strips the prefix again."""
    root = nn.Module()
    root.add_module(ROOT, module)

    def forward(*args: Any, **kwargs: Any) -> Any:
        return module(*args, **kwargs)

    with contextlib.suppress(TypeError, ValueError):
        forward.__signature__ = inspect.signature(module.forward)  # type: ignore[attr-defined]
    root.forward = forward
    return root


_EXAMPLE_SIZES = (EXAMPLE_SIZE, 128, 512, 2048, 16384)


def _run_eagerly(module: nn.Module, specs: list[TensorSpec], bound: Bound) -> tuple[tuple[torch.Tensor, ...], Any]:
    """Example inputs forward accepts and its result: variable dims at 32, or larger where the model needs more
    (a convolution stack over audio samples needs hundreds)."""
    variable = any(d == -1 for t in specs for d in t.shape[1:])
    first: BaseException | None = None
    for size in _EXAMPLE_SIZES if variable else (EXAMPLE_SIZE,):
        examples = example_inputs(specs, size=size)
        args, kwargs = bound.call_args(examples)
        try:
            with torch.no_grad():
                return examples, module(*args, **kwargs)
        except CaptureError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's forward failing on a valid input of its signature
            first = first or e
    assert first is not None
    shapes = [list(x.shape) for x in example_inputs(specs)]
    raise user_code_failure(first, f"forward on inputs of shapes {shapes} ({bound.describe(specs)})") from None


def _dynamic_shapes(specs: list[TensorSpec], bound: Bound) -> Any:
    dims = [{i: Dim.DYNAMIC for i, d in enumerate(t.shape) if d == -1} for t in specs]
    positional = [d for d, k in zip(dims, bound.keyword, strict=True) if k is None]
    keyword = {k: d for d, k in zip(dims, bound.keyword, strict=True) if k is not None}
    if not keyword:
        return tuple(positional)
    return (*positional, keyword) if positional else keyword


def _user_placeholders(ep: ExportedProgram) -> list[fx.Node]:
    names = [s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    by_name = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    return [by_name[n] for n in names]


def _placeholders(ep: ExportedProgram, specs: list[TensorSpec]) -> dict[str, str]:
    """Placeholder name -> wire name: user inputs come in the order of the flattened (args, kwargs), which is
    the order of --input (binding keeps it)."""
    users = _user_placeholders(ep)
    if len(users) != len(specs):
        raise CaptureError(f"forward takes {len(users)} tensor input(s), but {len(specs)} --input were given")
    return {p.name: t.name for p, t in zip(users, specs, strict=True)}


def _with_bounds(t: TensorSpec, ep: ExportedProgram, placeholder: fx.Node) -> TensorSpec:
    """The input with the sizes its variable dimensions accept, where the model bounds them (export's ranges)."""
    shape = getattr(placeholder.meta.get("val"), "shape", ())
    lo, hi, bounded = list(t.bounds()[0]), list(t.bounds()[1]), False
    for d, size in enumerate(shape):
        if d == 0 or t.shape[d] != -1 or not isinstance(size, torch.SymInt):
            continue
        r = ep.range_constraints.get(size.node.expr)
        if r is None:
            continue
        low, high = _finite(r.lower), _finite(r.upper)
        if low is not None and low > 2:  # export assumes 2 for every dynamic size; more is the model's
            lo[d], bounded = low, True
        if high is not None and high < (1 << 20):
            hi[d], bounded = high, True
    if not bounded:
        return t
    return t.model_copy(update={"min_shape": tuple(lo), "max_shape": tuple(hi)})


def _finite(v: Any) -> int | None:
    try:
        return int(v) if v.is_finite and v.is_integer else None
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None


def _check(version: ModelVersion, expected: Any, examples: tuple[torch.Tensor, ...]) -> None:
    leaves = torch.utils._pytree.tree_flatten_with_path(expected)[0]
    want = [
        t
        for path, t in leaves
        if isinstance(t, torch.Tensor)
        and not any(str(getattr(k, "key", getattr(k, "name", ""))) in CACHES for k in path)
    ]
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
                    f"output {o.name!r}: the captured graph differs from the model by {diff:.3g} (the model's code "
                    "takes another path under torch.export, or a capture bug: please report it with the model)"
                )
        elif not torch.equal(w, g):
            raise CaptureError(f"output {o.name!r}: the captured graph gives other values than the model")


__all__ = [
    "CaptureError",
    "Captured",
    "at",
    "capture",
    "capture_with_notes",
    "example_inputs",
    "parse_input",
    "where_exception",
]
