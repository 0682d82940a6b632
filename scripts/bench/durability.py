"""Edit latency with durability on (fsync) vs off, for a small and a 100-layer model.

Run: `.venv/bin/python scripts/bench/durability.py [--reps 40]`. Uses the real serving registry in-process
(validate, build, place, warm up, persist, swap), alternating durability on/off runs so ratios hold on a noisy
machine. Each edit inserts and then removes an identity Linear (alternating), so every other edit writes one
new layer blob. Writes docs/bench/durability.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from morphserve.graph.zoo import chain_spec  # noqa: E402
from morphserve.serving.metrics import Metrics  # noqa: E402
from morphserve.serving.registry import Registry  # noqa: E402
from morphserve.serving.sources import SpecSource  # noqa: E402
from morphserve.settings import Settings  # noqa: E402

MODELS = {
    "digits (5 nodes)": ("digits", None, "fc2", 64),
    "chain-100 (199 nodes)": ("chain", chain_spec(depth=100, width=64), "fc49", 64),
}


def run(name: str, spec: dict | None, anchor: str, width: int, fsync: bool, reps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        settings = Settings(models=["digits"] if spec is None else [], state_dir=Path(d), fsync=fsync)
        reg = Registry(settings, Metrics())
        reg.load_from_settings()
        if spec is not None:
            reg.add(name, SpecSource(spec))
        loop = asyncio.new_event_loop()  # Registry.edit is a coroutine (the HTTP layer awaits it)
        totals, persist = [], []
        ops = [
            [
                {
                    "op": "insert",
                    "after": anchor,
                    "name": "bench_id",
                    "init": "identity",
                    "layer": {"type": "Linear", "in_features": width, "out_features": width},
                }
            ],
            [{"op": "remove", "node": "bench_id"}],
        ]
        for i in range(reps + 2):
            t = time.perf_counter()
            out = loop.run_until_complete(reg.edit(name, ops[i % 2]))
            if i >= 2:  # warm-up edits excluded
                totals.append((time.perf_counter() - t) * 1000)
                persist.append(out.timings_ms["persist"])
        reg.close()
        loop.close()
    return {
        "median_ms": statistics.median(totals),
        "p90_ms": sorted(totals)[int(0.9 * len(totals)) - 1],
        "persist_median_ms": statistics.median(persist),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3, help="alternating on/off rounds; medians of round medians")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "durability.json")
    args = ap.parse_args()
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for label, (name, spec, anchor, width) in MODELS.items():
        results[label] = {"fsync": [], "no_fsync": []}
        for _ in range(args.rounds):
            for fsync in (True, False):
                results[label]["fsync" if fsync else "no_fsync"].append(
                    run(name, spec, anchor, width, fsync, args.reps)
                )
    rows = ["| model | durability | edit median ms | edit p90 ms | persist median ms |", "|---|---|---|---|---|"]
    summary = {}
    for label, modes in results.items():
        for mode, runs in modes.items():
            med = statistics.median(r["median_ms"] for r in runs)
            p90 = statistics.median(r["p90_ms"] for r in runs)
            per = statistics.median(r["persist_median_ms"] for r in runs)
            summary[f"{label}/{mode}"] = {"median_ms": med, "p90_ms": p90, "persist_median_ms": per}
            rows.append(
                f"| {label} | {'fsync on' if mode == 'fsync' else 'fsync off'} | {med:.1f} | {p90:.1f} | {per:.2f} |"
            )
        on, off = summary[f"{label}/fsync"]["median_ms"], summary[f"{label}/no_fsync"]["median_ms"]
        rows.append(f"| {label} | on / off | {on / off:.2f}x | | |")
    print("\n".join(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"reps": args.reps, "rounds": args.rounds, "runs": results, "summary": summary}, indent=2)
    )


if __name__ == "__main__":
    main()
