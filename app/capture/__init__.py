"""Client-side capture of a user's nn.Module into a morphserve bundle (never imported by the server).

    from app.capture import capture, write_bundle
    v = capture(model, inputs=["input:FP32:-1,3,224,224"], name="resnet")
    write_bundle(v, Path("resnet.zip"))     # serve with: morphserve serve --model resnet=resnet.zip
"""

from app.graph.bundle import bundle_bytes, write_bundle

from .capture import capture, example_inputs, parse_input
from .refusals import CaptureError
from .source import load_module

__all__ = ["CaptureError", "bundle_bytes", "capture", "example_inputs", "load_module", "parse_input", "write_bundle"]
