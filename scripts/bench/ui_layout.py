"""Benchmark: how the web page copes with big graphs, in Debian's Chromium (headless, software rendering).

For chains of 100, 500, 1,000 and 2,000 layers and an imported ResNet-50 (tests/e2e/ui/specs.py), against a real
`morphserve serve`:
- `drawn_s`: from navigation to the drawing of every node (fetching the graph, ELK's worker starting, the layout,
  rendering);
- `layout_first_ms`: the page's first layout (ELK in its web worker, including the worker's start-up);
- `layout_warm_ms`: a layout once the worker is warm (the direction toggled away and back: what a live edit costs);
- `frame_ms_p50` / `frame_ms_p95`: animation frame intervals while the view is zoomed with the mouse wheel for two
  seconds (16.7 ms is 60 frames a second).
Plus the size of the shipped bundle (raw and gzipped).

Usage: `python scripts/bench/ui_layout.py [--sizes 100,1000]`. Prints a markdown table and writes
docs/bench/ui_layout.json.
"""

from __future__ import annotations

import argparse
import gzip
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

import httpx  # noqa: E402
from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

from tests.conftest import ServerProcess  # noqa: E402
from tests.e2e.ui.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.e2e.ui.specs import chain, resnet50  # noqa: E402

OUT = ROOT / "docs" / "bench" / "ui_layout.json"
STATIC = ROOT / "app" / "morphserve" / "api" / "ui_static"

_FRAMES = """async () => {
  const t = [];
  const tick = (now) => { t.push(now); if (t.length < 10000 && now - t[0] < 2000) requestAnimationFrame(tick); };
  await new Promise((done) => { requestAnimationFrame(tick); setTimeout(done, 2100); });
  return t.slice(1).map((x, i) => x - t[i]);
}"""


def _bundle() -> dict[str, Any]:
    info = json.loads((STATIC / "build-info.json").read_text())
    sizes = {}
    for name in info["outputs"]:
        data = (STATIC / name).read_bytes()
        sizes[name] = {"bytes": len(data), "gzip": len(gzip.compress(data, 6))}
    page = [n for n in sizes if not n.startswith("assets/elk-worker")]
    return {
        "files": sizes,
        "page_bytes": sum(sizes[n]["bytes"] for n in page),
        "page_gzip": sum(sizes[n]["gzip"] for n in page),
        "total_bytes": sum(s["bytes"] for s in sizes.values()),
        "total_gzip": sum(s["gzip"] for s in sizes.values()),
    }


def _measure(page: Page, url: str, model: str, nodes: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    page.goto(f"{url}/ui/models/{model}")
    page.wait_for_selector('svg.graph[data-version="1"]', state="attached", timeout=600_000)
    drawn = time.perf_counter() - t0
    count = page.locator("svg.graph [data-node-id]").count()
    assert count == nodes, (model, count, nodes)
    first = float(page.get_attribute("svg.graph", "data-layout-ms") or "nan")
    for label in ("lay out left to right", "lay out top to bottom"):  # away and back: the warm worker's layout
        seq = int(page.get_attribute("svg.graph", "data-layout-seq") or "0")
        page.click(f'button[aria-label="{label}"]')
        expect(page.locator("svg.graph")).not_to_have_attribute("data-layout-seq", str(seq), timeout=600_000)
    warm = float(page.get_attribute("svg.graph", "data-layout-ms") or "nan")
    box = page.locator("svg.graph").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    frames = page.evaluate_handle(_FRAMES)
    for i in range(100):
        page.mouse.wheel(0, -40 if (i // 25) % 2 == 0 else 40)
        page.wait_for_timeout(16)
    intervals = sorted(frames.json_value())
    return {
        "model": model,
        "nodes": nodes,
        "drawn_s": round(drawn, 2),
        "layout_first_ms": round(first),
        "layout_warm_ms": round(warm),
        "frame_ms_p50": round(statistics.median(intervals), 1),
        "frame_ms_p95": round(intervals[int(0.95 * (len(intervals) - 1))], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,500,1000,2000", help="chain lengths in layers")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as state:
        server = ServerProcess(["--state-dir", state, "--no-fsync", "--model", "digits"]).wait_ready(120)
        url = server.url
        try:
            models: list[tuple[str, dict[str, Any], int]] = [(f"chain{n}", chain(n), n + 2) for n in sizes]
            models.append(("resnet50", resnet50(), 177))
            for name, spec, _ in models:
                r = httpx.post(f"{url}/v1/models", json={"name": name, "spec": spec}, timeout=1200)
                r.raise_for_status()
            rows = []
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                for name, _, nodes in models:
                    page = browser.new_page(viewport={"width": 1440, "height": 900})
                    rows.append(_measure(page, url, name, nodes))
                    page.close()
                    print(rows[-1], flush=True)
                browser.close()
        finally:
            server.stop()
    bundle = _bundle()
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    doc = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "load_average_1min_before_after": load,
        "rows": rows,
        "bundle": bundle,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=2) + "\n")
    print("\n| graph | nodes | drawn (s) | first layout (ms) | warm layout (ms) | frame p50 / p95 while zooming (ms) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['model']} | {r['nodes']:,} | {r['drawn_s']} | {r['layout_first_ms']:,} | {r['layout_warm_ms']:,} "
            f"| {r['frame_ms_p50']} / {r['frame_ms_p95']} |"
        )
    print(f"\n1-minute load average {load[0]} before, {load[1]} after, on {os.cpu_count()} CPUs")
    print(
        f"\nbundle: page {bundle['page_bytes'] / 1e3:.0f} kB ({bundle['page_gzip'] / 1e3:.0f} kB gzipped), "
        f"with the layout worker {bundle['total_bytes'] / 1e6:.2f} MB ({bundle['total_gzip'] / 1e3:.0f} kB gzipped)"
    )


if __name__ == "__main__":
    main()
