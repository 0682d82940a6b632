"""ONNX in: `morphserve import model.onnx --input ...` converts the ONNX graph to a PyTorch module with onnx2torch
and captures that module through the same path as any other (export, Core ATen, layers by module path).

So a Triton user brings the ONNX files they have. The converter is an optional extra (`pip install
'morphserve[onnx]'`); without it the import is refused in one line that says so. onnx2torch imports torchvision
only for its NonMaxSuppression and RoiAlign converters: where torchvision is missing (or is a build for another
torch), a stand-in lets the rest load, and a model that uses one of those two is refused by name.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

from torch import nn

from .refusals import CaptureError, first_line


def is_onnx(source: str) -> bool:
    return source.lower().endswith(".onnx")


def _needs_torchvision(op: str) -> Any:
    def missing(*args: Any, **kwargs: Any) -> Any:
        raise CaptureError(f"the ONNX model uses {op}, which needs torchvision (pip install torchvision)")

    return missing


def _converter() -> Any:
    """onnx2torch's `convert`, or CaptureError saying how to install it."""
    try:
        return importlib.import_module("onnx2torch").convert
    except ModuleNotFoundError as e:
        if e.name != "torchvision":
            raise CaptureError(
                f"importing an ONNX model needs the onnx extra ({e.name} is missing): pip install 'morphserve[onnx]'"
            ) from None
    except (RuntimeError, ImportError):  # a torchvision built for another torch fails as it registers its ops
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    stand_in = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = _needs_torchvision("NonMaxSuppression")  # type: ignore[attr-defined]
    ops.roi_align = _needs_torchvision("RoiAlign")  # type: ignore[attr-defined]
    stand_in.ops = ops  # type: ignore[attr-defined]
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = stand_in, ops
    try:
        for name in [m for m in sys.modules if m.startswith("onnx2torch")]:
            del sys.modules[name]
        return importlib.import_module("onnx2torch").convert
    finally:
        del sys.modules["torchvision"], sys.modules["torchvision.ops"]  # only onnx2torch keeps the stand-in


#: The newest opset onnx2torch converts every operator of; a newer model is converted down to it first.
CONVERTER_OPSET = 17


def _convert(convert: Any, model: Any) -> nn.Module:
    """Convert; a model of a newer opset than the converter knows is first converted down with ONNX's own
    version converter (operators keep their meaning across these opsets)."""
    try:
        module: nn.Module = convert(model)
        return module
    except NotImplementedError:
        opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if opset <= CONVERTER_OPSET:
            raise
    from onnx import version_converter

    older = version_converter.convert_version(model, CONVERTER_OPSET)
    module = convert(older)
    return module


def load_onnx(path: Path) -> tuple[nn.Module, list[str]]:
    """The ONNX model at `path` as a module, and its output names (the wire names its clients know); CaptureError
    naming the problem (a missing file, an operator the converter does not know, an invalid model)."""
    if not path.is_file():
        raise CaptureError(f"no such file: {path}")
    convert = _converter()
    try:
        import onnx

        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - a file that is not ONNX: one line naming it
        raise CaptureError(f"{path} is not a readable ONNX model: {first_line(e)}") from None
    try:
        module: nn.Module = _convert(convert, model)
    except CaptureError:
        raise
    except NotImplementedError as e:
        raise CaptureError(f"{path}: {first_line(e)} (onnx2torch cannot convert it)") from None
    except Exception as e:  # noqa: BLE001 - the converter's own failures, named by type
        raise CaptureError(f"{path}: converting the ONNX graph failed: {type(e).__name__}: {first_line(e)}") from None
    return module.eval(), [o.name for o in model.graph.output]
