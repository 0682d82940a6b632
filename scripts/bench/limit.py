"""The limit: in-process forward throughput of a zoo model at given batch sizes, no HTTP, no serialisation.

It runs the exact module morphserve runs on the CPU (`load_zoo(name).graph_module`, same seeded weights) under
`torch.inference_mode()`, with the torch thread count taken from OMP_NUM_THREADS like the servers'. On CUDA the
input is already on the device and every timed batch is synchronised. run.py calls `limits()` in its own process;
on its own it prints one JSON line per model:

    python scripts/bench/limit.py --models mlp,convnet --batch-sizes 1,16,32,64 --seconds 2 \
        [--options '{"convnet": {"width": 1}}'] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from morphserve.graph import load_zoo  # noqa: E402


def measure(model: torch.nn.Module, x: torch.Tensor, seconds: float, cuda: bool) -> dict[str, float]:
    def once() -> None:
        model(x)
        if cuda:
            torch.cuda.synchronize()

    t_warm = time.perf_counter() + min(0.2, seconds / 4)
    for i in range(50):  # at least 3 forwards, at most 50 or ~0.2 s
        once()
        if i >= 2 and time.perf_counter() > t_warm:
            break
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    batch = x.shape[0]
    total = sum(times)
    return {
        "batch_size": batch,
        "iterations": len(times),
        "rows_per_s": round(batch * len(times) / total, 1),
        "batch_ms_median": round(statistics.median(times) * 1e3, 4),
        "batch_ms_p99": round(sorted(times)[min(len(times) - 1, int(0.99 * len(times)))] * 1e3, 4),
    }


def limits(
    models: list[str],
    options: dict[str, dict],
    batch_sizes: list[int],
    seconds: float,
    device: str,
    threads: int | None = None,
    dtype: str = "float32",
) -> list[dict]:
    """One result per model: rows/s and batch latency at each batch size. `threads` sets torch's intra-op thread
    count (default: as OMP_NUM_THREADS made it); `dtype` casts the module and its inputs (float16, bfloat16)."""
    cuda = device.startswith("cuda")
    if threads is not None:
        torch.set_num_threads(threads)
    out = []
    with torch.inference_mode():
        for name in models:
            opts = options.get(name, {})
            version = load_zoo(name, **opts)
            model = version.graph_module.to(device=device, dtype=getattr(torch, dtype)).eval()
            shape = list(version.inputs[0].shape[1:])
            results = []
            for b in batch_sizes:
                x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(0)).to(device, getattr(torch, dtype))
                results.append(measure(model, x, seconds, cuda))
            out.append(
                {
                    "model": name,
                    "options": opts,
                    "device": device,
                    "dtype": dtype,
                    "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
                    "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "results": results,
                }
            )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp", help="comma list of zoo models")
    ap.add_argument("--options", default=None, help='zoo options per model, JSON: {"convnet": {"width": 1.0}}')
    ap.add_argument("--batch-sizes", default="1,16,32,64")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per batch size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(f"error: --device {args.device} but CUDA is not available (torch {torch.__version__})", file=sys.stderr)
        return 2
    for doc in limits(
        [m.strip() for m in args.models.split(",") if m.strip()],
        json.loads(args.options) if args.options else {},
        [int(b) for b in args.batch_sizes.split(",")],
        args.seconds,
        args.device,
        dtype=args.dtype,
    ):
        print(json.dumps(doc), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
