"""The page's contrast and accessibility (axe-core), its live serving panel, and that it fetches nothing from outside
the server, in a real browser against a real server.

The page fixture fails any test whose page logged a console error, threw, or requested anything outside the
server (see conftest.py)."""

from __future__ import annotations

import re
import threading

import httpx
import numpy as np
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from tests.conftest import ServerProcess
from tests.e2e.ui.conftest import Guard, open_model

_SVG_CONTRAST = """() => {
  const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lin = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = (c) => { const [r, g, b] = rgb(c).map(lin); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const out = [];
  for (const node of document.querySelectorAll("svg.graph g.node")) {
    const body = node.querySelector("rect.body:not(.shadow)");
    for (const t of node.querySelectorAll(":scope > text")) {
      if (getComputedStyle(t).display === "none") continue;
      const contrast = ratio(getComputedStyle(t).fill, getComputedStyle(body).fill);
      out.push([node.dataset.nodeId ?? node.dataset.groupId, t.textContent, contrast]);
    }
  }
  const canvas = getComputedStyle(document.querySelector("svg.graph")).backgroundColor;
  const edge = getComputedStyle(document.querySelector("svg.graph path.edge")).stroke;
  return { texts: out, edge: ratio(edge, canvas) };
}"""


def test_contrast_and_accessibility(page: Page, server: ServerProcess) -> None:
    open_model(page, server, "resnet", "?diff=1")  # marks drawn too
    svg = page.evaluate(_SVG_CONTRAST)
    low = [t for t in svg["texts"] if t[2] < 4.5]
    assert svg["texts"] and not low, low  # AA for text
    assert svg["edge"] >= 3, svg["edge"]  # AA for graphics that carry meaning (WCAG 1.4.11)
    page.click('[data-node-id="s1b1_bn1"]')
    expect(page.locator('[data-testid="weights"]')).to_be_visible()
    axe = Axe()
    for tab in ("node", "versions", "serving"):
        page.click(f"[role=tab]#tab-{tab}")
        results = axe.run(page, options={"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21aa"]}})
        assert results.violations_count == 0, results.generate_report()


def test_serving_panel_updates_live(page: Page, server: ServerProcess, fresh: str) -> None:
    open_model(page, server, fresh)
    page.click('[role=tab]:has-text("serving")')
    card = page.locator(f'[data-serving-model="{fresh}"]')
    expect(card).to_be_visible()
    x = np.random.default_rng(0).random((1, 64)).tolist()
    stop = threading.Event()

    def load() -> None:  # steady traffic while the panel is watched (an idle interval shows no latency)
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                assert c.post(f"/v1/models/{fresh}/infer", json={"inputs": x}).status_code == 200

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        expect(card.locator('[data-stat="p50"]')).to_contain_text("ms")
        expect(card.locator('[data-stat="p99"]')).to_contain_text("ms")
        expect(card.locator('[data-stat="batch"]')).not_to_have_text("—")
        expect(card.locator('[data-stat="rps"]')).not_to_have_text("0.0")
        expect(card.locator("svg.spark polyline").first).to_have_attribute("points", re.compile(r"\d+,\d"))
    finally:
        stop.set()
        thread.join(30)


def test_nothing_outside_the_server_can_be_fetched(page: Page, server: ServerProcess, guard: Guard) -> None:
    open_model(page, server, "digits")
    assert guard.requests and all(u.startswith(server.url + "/") for u in guard.requests)
    assert any("/assets/elk-worker" in u for u in guard.requests)  # the layout worker is served by us too
    # The page's own policy refuses other origins before anything reaches the network...
    with page.expect_console_message(lambda m: "Content Security Policy" in m.text):
        outcome = page.evaluate("fetch('http://example.invalid/x').then(() => 'fetched', () => 'refused')")
    assert outcome == "refused" and guard.outside == []
    # ...and the guard of every test records (and fails on) whatever would get past a policy.
    with pytest.raises(PlaywrightError):
        page.goto("http://example.invalid/")
    assert guard.outside == ["http://example.invalid/"]
    guard.outside.clear()
    guard.errors.clear()  # the refused fetch logged a CSP violation, on purpose

