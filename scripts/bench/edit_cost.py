"""Benchmark: what one live edit costs, in time and in memory, as the graph grows.

(a) Time to validate and build one edit: `LiveModel.propose` of an identity `Linear` insert in the middle of a
    `chain` zoo model (lint + shape propagation on fake tensors + the new version), plus the first access to
    `.graph_module` (torch.fx codegen), on chains of 10, 100 and 1000 Linear layers. Each model is loaded once; the
    edit is then proposed `--reps` times against the same current version (nothing is committed), alternating
    between two insert positions. Reported: median and p90 in ms, with the propose / fx-build split.
(b) Memory per version: after committing an identity insert, the bytes of tensor storage the new version holds
    that the previous one did not (sum of `untyped_storage().nbytes()` over tensors whose storage `data_ptr` is
    new), against the model's total bytes. Unchanged layers are shared, so this is the new layer's size.

Usage: `python scripts/bench/edit_cost.py [--reps N] [--quick]`. Prints a markdown table and writes the numbers
to docs/bench/edit_cost.json. Targets (issue 2): median <= 20 ms at 100 layers, <= 300 ms at 1000 layers.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from morphserve.graph import LiveModel, ModelVersion, load_zoo  # noqa: E402

SIZES = (10, 100, 1000)
WIDTH = 64
TARGETS_MS = {100: 20.0, 1000: 300.0}
OUT = ROOT / "docs" / "bench" / "edit_cost.json"


def _insert(after: str) -> list[dict[str, Any]]:
    layer = {"type": "Linear", "in_features": WIDTH, "out_features": WIDTH}
    return [{"op": "insert", "after": after, "layer": layer, "init": "identity"}]


def _p90(xs: list[float]) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def _storages(v: ModelVersion) -> dict[int, int]:
    """data_ptr -> nbytes of every tensor storage a version holds (parameters and buffers)."""
    out: dict[int, int] = {}
    for t in v.state_dict().values():
        s = t.untyped_storage()
        out[s.data_ptr()] = s.nbytes()
    return out


def time_edit(depth: int, reps: int, warmup: int = 3) -> dict[str, Any]:
    t0 = time.perf_counter()
    lm = LiveModel(load_zoo("chain", depth=depth, width=WIDTH))
    load_s = time.perf_counter() - t0
    mid = depth // 2
    anchors = [f"fc{mid}", f"relu{mid - 1}" if depth > 1 else "input"]  # alternate between two positions
    total, propose, build = [], [], []
    for i in range(warmup + reps):
        gc.collect()
        a = time.perf_counter()
        v = lm.propose(_insert(anchors[i % 2]))
        b = time.perf_counter()
        gm = v.graph_module
        c = time.perf_counter()
        assert gm is not None and v.version == 2
        if i >= warmup:
            total.append((c - a) * 1e3)
            propose.append((b - a) * 1e3)
            build.append((c - b) * 1e3)
        del v, gm
    cur = lm.current
    return {
        "layers": depth,
        "nodes": len(cur.spec.nodes),
        "load_s": round(load_s, 3),
        "reps": reps,
        "median_ms": round(statistics.median(total), 3),
        "p90_ms": round(_p90(total), 3),
        "propose_median_ms": round(statistics.median(propose), 3),
        "fx_build_median_ms": round(statistics.median(build), 3),
        "target_ms": TARGETS_MS.get(depth),
        "_lm": lm,
    }


def memory_per_version(lm: LiveModel, versions: int = 3) -> dict[str, Any]:
    """Commit `versions` identity inserts; bytes of new storage each one adds vs the model's total bytes."""
    depth = sum(1 for n in lm.current.spec.nodes if n.layer is not None and n.layer.type == "Linear")
    added: list[int] = []
    for k in range(versions):
        prev = lm.current
        anchor = f"fc{(depth // 2 + k) % depth}"
        v = lm.propose(_insert(anchor))
        lm.commit(v)
        before = _storages(prev)
        added.append(sum(n for p, n in _storages(v).items() if p not in before))
    cur = lm.current
    new_layer_bytes = (WIDTH * WIDTH + WIDTH) * 4
    total = sum(_storages(cur).values())
    assert all(a == new_layer_bytes for a in added), (added, new_layer_bytes)
    return {
        "new_bytes_per_version": added[0],
        "new_layer_param_bytes": new_layer_bytes,
        "model_bytes": total,
        "fraction_of_model": added[0] / total,
        "versions_committed": versions,
    }


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| Linear layers | graph nodes | median ms | p90 ms | propose ms | fx build ms | target | "
        "new bytes / version | model bytes | share |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        target = (
            f"<= {r['target_ms']:.0f} ms {'ok' if r['median_ms'] <= r['target_ms'] else 'MISSED'}"
            if r["target_ms"]
            else "-"
        )
        lines.append(
            f"| {r['layers']} | {r['nodes']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
            f"{r['propose_median_ms']:.1f} | {r['fx_build_median_ms']:.1f} | {target} | "
            f"{_fmt_bytes(r['new_bytes_per_version'])} | {_fmt_bytes(r['model_bytes'])} | "
            f"{100 * r['fraction_of_model']:.2f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=None, help="timed edits per size (default 30, 5 with --quick)")
    ap.add_argument("--quick", action="store_true", help="few repetitions: a smoke run")
    ap.add_argument("--out", type=Path, default=OUT, help=f"JSON output (default {OUT.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    reps = args.reps if args.reps is not None else (5 if args.quick else 30)
    if reps < 1:
        ap.error("--reps must be at least 1")

    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for depth in SIZES:
        r = time_edit(depth, reps, warmup=1 if args.quick else 3)
        lm = r.pop("_lm")
        r.update(memory_per_version(lm))
        rows.append(r)
        print(f"chain {depth:>5}: median {r['median_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms", file=sys.stderr)

    print(table(rows))
    print(
        f"\n{reps} timed edits per size; 1-minute load average {load_before[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after, on {os.cpu_count()} CPUs"
    )
    result = {
        "benchmark": "edit_cost",
        "description": "LiveModel.propose of an identity Linear insert in the middle of a chain + .graph_module; "
        "new tensor storage per committed version",
        "width": WIDTH,
        "reps": reps,
        "quick": args.quick,
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            # other work on the machine inflates wall-clock times: the 1-minute load average around the run
            "loadavg_1m_before": round(load_before[0], 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": rows,
        "targets_met": all(r["median_ms"] <= r["target_ms"] for r in rows if r["target_ms"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
