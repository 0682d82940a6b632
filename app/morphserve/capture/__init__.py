"""Client-side capture of a user's nn.Module into a morphserve bundle (never imported by the server).

    from morphserve.capture import capture, write_bundle
    v = capture(model, inputs=["input:FP32:-1,3,224,224"], name="resnet")
    write_bundle(v, Path("resnet.zip"))     # serve with: morphserve serve --model resnet=resnet.zip

Names are loaded on first use, so that the CLI can register the `import` command without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "capture": "morphserve.capture.api",
    "example_inputs": "morphserve.capture.api",
    "parse_input": "morphserve.capture.api",
    "CaptureError": "morphserve.capture.refusals",
    "Imported": "morphserve.capture.importer",
    "import_to_bundle": "morphserve.capture.importer",
    "load_module": "morphserve.capture.source",
    "bundle_bytes": "morphserve.graph.bundle",
    "write_bundle": "morphserve.graph.bundle",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'morphserve.capture' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
