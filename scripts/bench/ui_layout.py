"""Benchmark: how the web page copes with big graphs, in Debian's Chromium (headless, software rendering).

Against a real `morphserve serve`, for chains of 100 to 2,000 layers (no groups), the ResNet-50 spec of
tests/e2e/ui/specs.py (177 nodes in 24 groups) and transformer-shaped encoders of 1,000 and 10,000 nodes (module-path
ids four levels deep):
- `drawn_ms`: from navigation to the first drawing in the DOM, timed in the page (performance.now(): fetching the
  graph, grouping and folding it, the layout worker's start and layout, rendering);
- `layout_ms`: that first layout, posted to the worker and answered (performance.now() around the round trip);
- `longest_task_ms`: the longest main-thread task while the page loaded (PerformanceObserver `longtask`): how long
  the page could not answer input;
- `open_group_ms`: opening one collapsed group (the first of the top level's, or the encoder's first stage), and
  how many groups were laid out for it (`open_relaid`: the rest come from the worker's cache);
- `all_ms`: the whole graph expanded (every node laid out at once);
- `edit_ms` / `edit_relaid`: the layout after a live edit (an identity layer inserted by another client over REST,
  arriving by the event stream; at the spec's limit of 10,000 nodes, the layer replaced instead), with the groups
  as they opened; `edit_worker_ms`: the engine's own part of it, in the worker (the rest is the page's wait);
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

from tests.conftest import AUTH, TOKEN, ServerProcess  # noqa: E402
from tests.e2e.ui.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.e2e.ui.specs import chain, encoder, resnet50  # noqa: E402

OUT = ROOT / "docs" / "bench" / "ui_layout.json"
STATIC = ROOT / "app" / "morphserve" / "api" / "ui_static"

_FRAMES = """async () => {
  const t = [];
  const tick = (now) => { t.push(now); if (t.length < 10000 && now - t[0] < 2000) requestAnimationFrame(tick); };
  await new Promise((done) => { requestAnimationFrame(tick); setTimeout(done, 2100); });
  return t.slice(1).map((x, i) => x - t[i]);
}"""
_LONG_TASKS = """(() => {
  window.__longTasks = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__longTasks.push(Math.round(e.duration));
  }).observe({ type: "longtask", buffered: true });
})();"""


def _bundle() -> dict[str, Any]:
    info = json.loads((STATIC / "build-info.json").read_text())
    sizes = {}
    for name in info["outputs"]:
        data = (STATIC / name).read_bytes()
        sizes[name] = {"bytes": len(data), "gzip": len(gzip.compress(data, 6))}
    return {
        "files": sizes,
        "total_bytes": sum(s["bytes"] for s in sizes.values()),
        "total_gzip": sum(s["gzip"] for s in sizes.values()),
    }


def _attr(page: Page, name: str) -> float:
    return float(page.get_attribute("svg.graph", name) or "nan")


def _relayout(page: Page, action: Any) -> None:
    seq = page.get_attribute("svg.graph", "data-layout-seq") or ""
    action()
    expect(page.locator("svg.graph")).not_to_have_attribute("data-layout-seq", seq, timeout=600_000)


def _first_box(page: Page) -> str | None:
    ids: list[str] = page.eval_on_selector_all(
        '[data-group-id][data-collapsed="true"]', "els => els.map(e => e.dataset.groupId)"
    )
    return ids[0] if ids else None


def _measure(page: Page, url: str, model: str, spec: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"model": model, "nodes": len(spec["nodes"]) + 2}
    page.add_init_script(_LONG_TASKS)
    page.goto(f"{url}/ui/models/{model}")
    page.wait_for_selector('svg.graph[data-version="1"]', state="attached", timeout=600_000)
    expect(page.locator('[data-model-live="live"]')).to_be_attached(timeout=600_000)
    row["drawn_ms"] = round(_attr(page, "data-drawn-at"))
    row["layout_ms"] = round(_attr(page, "data-layout-ms"), 1)
    row["elements"] = int(_attr(page, "data-elements"))
    row["longest_task_ms"] = max(page.evaluate("window.__longTasks"), default=0)
    group = _first_box(page)
    if group is not None:
        closed = page.locator(f'[data-group-id="{group}"][data-collapsed="true"]')
        _relayout(page, lambda: closed.dispatch_event("click"))
        row["open_group_ms"] = round(_attr(page, "data-layout-ms"), 1)
        row["open_worker_ms"] = round(_attr(page, "data-layout-worker-ms"), 1)
        row["open_relaid"] = int(_attr(page, "data-layout-relaid"))
    # A live edit by another client: an identity layer after the first layer inside the opened group (or the first).
    g = httpx.get(f"{url}/v1/models/{model}/graph", timeout=60).json()
    inner = [n for n in g["nodes"] if n["kind"] == "layer" and n["layer"]["type"] == "Linear"]
    target = next((n for n in inner if group and n["id"].startswith(group + "_")), inner[0] if inner else None)
    if target is not None:
        width = target["layer"]["out_features"]
        layer = {"type": "Linear", "in_features": width, "out_features": width}
        op: dict[str, Any] = {"op": "insert", "after": target["id"], "name": "bench_probe", "init": "identity"}
        if len(spec["nodes"]) >= 10_000:  # a spec's node limit: new weights for the layer instead of a new one
            op = {"op": "replace", "node": target["id"], "seed": 1}
        op["layer"] = layer
        r = httpx.post(f"{url}/v1/models/{model}/edits", headers=AUTH, json={"ops": [op]}, timeout=600)
        r.raise_for_status()
        page.wait_for_selector('svg.graph[data-version="2"]', state="attached", timeout=600_000)
        row["edit_ms"] = round(_attr(page, "data-layout-ms"), 1)
        row["edit_relaid"] = int(_attr(page, "data-layout-relaid"))
        row["edit_worker_ms"] = round(_attr(page, "data-layout-worker-ms"), 1)
    if page.locator("button:has-text('Expand all')").count():
        t0 = time.perf_counter()
        _relayout(page, lambda: page.click("button:has-text('Expand all')"))
        row["all_ms"] = round(_attr(page, "data-layout-ms"), 1)
        row["all_drawn_s"] = round(time.perf_counter() - t0, 2)
        page.click("button:has-text('Collapse groups')")
    box = page.locator("svg.graph").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    frames = page.evaluate_handle(_FRAMES)
    for i in range(100):
        page.mouse.wheel(0, -40 if (i // 25) % 2 == 0 else 40)
        page.wait_for_timeout(16)
    intervals = sorted(frames.json_value())
    row["frame_ms_p50"] = round(statistics.median(intervals), 1)
    row["frame_ms_p95"] = round(intervals[int(0.95 * (len(intervals) - 1))], 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,500,1000,2000", help="chain lengths in layers")
    ap.add_argument("--encoders", default="1000,10000", help="encoder sizes in nodes")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    encoders = [int(s) for s in args.encoders.split(",") if s]
    models: list[tuple[str, dict[str, Any]]] = [(f"chain{n}", chain(n)) for n in sizes]
    models.append(("resnet50", resnet50()))
    models += [(f"encoder{n}", encoder(n)) for n in encoders]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as state:
        server = ServerProcess(["--state-dir", state, "--no-fsync", "--admin-token", TOKEN]).wait_ready(120)
        url = server.url
        try:
            for name, spec in models:
                r = httpx.post(f"{url}/v1/models", headers=AUTH, json={"name": name, "spec": spec}, timeout=1200)
                r.raise_for_status()
            rows = []
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                for name, spec in models:
                    page = browser.new_page(viewport={"width": 1440, "height": 900})
                    rows.append(_measure(page, url, name, spec))
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

    def cell(r: dict[str, Any], key: str, relaid: str | None = None) -> str:
        if key not in r:
            return "—"
        return f"{r[key]:,}" + (f" ({r[relaid]})" if relaid and relaid in r else "")

    print(
        "\n| graph | nodes | drawn (ms) | first layout (ms) | longest task (ms) | open a group (ms, groups laid out) "
        "| live edit (ms, groups laid out) | all expanded (ms) | frame p50 / p95 (ms) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['model']} | {row['nodes']:,} | {row['drawn_ms']:,} | {row['layout_ms']:,} "
            f"| {row['longest_task_ms']} | {cell(row, 'open_group_ms', 'open_relaid')} "
            f"| {cell(row, 'edit_ms', 'edit_relaid')} | {cell(row, 'all_ms')} "
            f"| {row['frame_ms_p50']} / {row['frame_ms_p95']} |"
        )
    print(f"\n1-minute load average {load[0]} before, {load[1]} after, on {os.cpu_count()} CPUs")
    print(f"\nbundle: {bundle['total_bytes'] / 1e3:.0f} kB ({bundle['total_gzip'] / 1e3:.0f} kB gzipped)")


if __name__ == "__main__":
    main()
