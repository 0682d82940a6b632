"""What both peers share: the same zoo model and weights as morphserve, on the same device, loaded the plain way.

`load_zoo(name, **options)` gives morphserve's version 1 of a zoo model (seeded weights); its fx GraphModule is the
exact module morphserve runs on the CPU. A peer calls it like any `nn.Module`: `model(x)` returns a tuple of outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load_model(name: str, options: str | None, device: str) -> Any:
    """The zoo model `name` (with `options`, a JSON object such as '{"width": 1.0}') on `device`, in eval mode."""
    import torch

    from app.graph import load_zoo

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device} requested but CUDA is not available")
    version = load_zoo(name, **(json.loads(options) if options else {}))
    return version.graph_module.to(device).eval()
