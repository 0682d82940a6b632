"""What both peers share: the same zoo model and weights as morphserve, on the same device, loaded the plain way.

`load_zoo(name, **options)` gives morphserve's version 1 of a zoo model (seeded weights); its fx GraphModule is the
exact module morphserve runs on the CPU. A peer calls it like any `nn.Module`: `model(x)` returns a tuple of outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
# The package's source root (`app/morphserve`): the peers' own venvs do not have morphserve installed.
for _path in (ROOT, ROOT / "app"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def load_model(name: str, options: str | None, device: str, dtype: str = "float32") -> Any:
    """The zoo model `name` (with `options`, a JSON object such as '{"width": 1.0}') on `device`, in eval mode,
    its parameters cast to `dtype` (float32, float16 or bfloat16); inputs must then be cast to it as well."""
    import torch

    from morphserve.graph import load_zoo

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device} requested but CUDA is not available")
    version = load_zoo(name, **(json.loads(options) if options else {}))
    return version.graph_module.to(device=device, dtype=getattr(torch, dtype)).eval()


def peer_arg_parser(
    description: str, batching: bool = True, delay_flag: str = "--batch-delay-ms"
) -> argparse.ArgumentParser:
    """The flags every peer takes from the harness (where to listen, what to serve; its batching when it has any)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--options", default=None, help="zoo options as a JSON object")
    ap.add_argument("--device", default="cpu")
    if batching:
        ap.add_argument("--max-batch-size", type=int, default=32)
        ap.add_argument(delay_flag, type=float, default=2.0, help="the longest a batch waits for more, in ms")
    return ap
