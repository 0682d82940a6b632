"""Benchmark: what importing your own model costs, and whether the imported model serves as fast as the original.

(a) Forward speed: the rebuilt module (the server's path: bundle zip -> read_bundle -> from_spec -> the version's
    fx GraphModule) against the original module's eager forward, in this one process, both under
    torch.inference_mode: ResNet-18 at 64x64 and the test BERT config (seq 32), batch 1 and 32. The two are
    timed interleaved (one call of each per round), so drift on a busy machine hits both. Reported: medians in ms
    and rebuilt/original. Target (issue 12): within 5 %.
(b) Importing ResNet-50 (capture with torch.export + writing the bundle), at 224x224. Target <= 30 s.
(c) Loading its bundle as the server does at start (read_bundle + from_spec). Target <= 5 s.
(d) Validate + build of an edit on it: replace one 1x1 conv (LiveModel.propose + the fx GraphModule), median.
    Target <= 100 ms.

Usage: `python scripts/bench/import_cost.py [--reps N] [--quick]`; prints JSON (and writes it with --out PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from morphserve.capture import capture, write_bundle  # noqa: E402
from morphserve.graph import LiveModel, from_spec, read_bundle  # noqa: E402
from tests.models import sequence, vision  # noqa: E402


def _served(module: torch.nn.Module, inputs: list[str], name: str, tmp: Path) -> Any:
    v = capture(module, inputs, name=name)
    write_bundle(v, tmp / f"{name}.zip")
    spec, tensors = read_bundle(tmp / f"{name}.zip")
    return from_spec(spec, tensors)


def _interleaved(a: Any, b: Any, x: tuple[torch.Tensor, ...], reps: int) -> tuple[float, float]:
    ta, tb = [], []
    with torch.inference_mode():
        for _ in range(3):
            a(*x), b(*x)
        for _ in range(reps):
            t0 = time.perf_counter()
            a(*x)
            t1 = time.perf_counter()
            b(*x)
            t2 = time.perf_counter()
            ta.append(t1 - t0)
            tb.append(t2 - t1)
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3


def forward_speed(reps: int, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    torch.manual_seed(0)
    cases = [
        ("resnet18_64", vision.resnet18(64).eval(), ["input:FP32:-1,3,64,64"], lambda b: (torch.randn(b, 3, 64, 64),)),
        ("bert", sequence.hf_bert(), ["input_ids:INT64:-1,-1"], lambda b: (torch.randint(1, 100, (b, 32)),)),
    ]
    for name, module, inputs, make in cases:
        served = _served(module, inputs, name, tmp)
        gm = served.graph_module
        for batch in (1, 32):
            x = make(batch)
            eager_ms, rebuilt_ms = _interleaved(module, gm, x, reps if batch == 1 else max(5, reps // 4))
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "eager_ms": round(eager_ms, 3),
                    "rebuilt_ms": round(rebuilt_ms, 3),
                    "ratio": round(rebuilt_ms / eager_ms, 3),
                }
            )
    return rows


def resnet50_costs(reps: int, tmp: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    module = vision.resnet50(64).eval()
    t0 = time.perf_counter()
    v = capture(module, ["input:FP32:-1,3,224,224"], name="resnet50")
    write_bundle(v, tmp / "resnet50.zip")
    import_s = time.perf_counter() - t0
    size = (tmp / "resnet50.zip").stat().st_size
    t0 = time.perf_counter()
    spec, tensors = read_bundle(tmp / "resnet50.zip")
    served = from_spec(spec, tensors)
    load_s = time.perf_counter() - t0
    lm = LiveModel(served)
    conv = served.spec.node("layer1_0_conv1")
    assert conv is not None and conv.layer is not None and conv.layer.kernel_size in (1, (1, 1))  # type: ignore[union-attr]
    edit_ms = []
    for i in range(reps):
        t0 = time.perf_counter()
        cand = lm.propose([{"op": "replace", "node": "layer1_0_conv1", "layer": conv.layer.to_json(), "seed": i}])
        cand.graph_module  # noqa: B018 - the build is part of the cost
        edit_ms.append((time.perf_counter() - t0) * 1e3)
    return {
        "import_s": round(import_s, 2),
        "bundle_mb": round(size / 1e6, 1),
        "load_s": round(load_s, 2),
        "edit_replace_1x1_conv_ms_median": round(statistics.median(edit_ms), 1),
        "edit_ms_p90": round(sorted(edit_ms)[int(0.9 * (len(edit_ms) - 1))], 1),
        "nodes": len(served.spec.nodes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="few repetitions: checks the script works")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    reps = 5 if args.quick else args.reps
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        result = {
            "machine": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
            },
            "forward": forward_speed(reps, tmp),
            "resnet50": resnet50_costs(max(3, reps // 5), tmp),
            "targets": {"forward_ratio_max": 1.05, "import_s_max": 30, "load_s_max": 5, "edit_ms_max": 100},
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
