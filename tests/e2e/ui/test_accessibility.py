"""The page's accessibility in a real browser against a real server: contrast of the drawing (WCAG AA for text and
for graphics that carry meaning), axe-core on every tab, and keyboard navigation between nodes.

The page fixture fails any test whose page logged a console error, threw, or requested anything outside the
server (see conftest.py)."""

from __future__ import annotations

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from tests.conftest import ServerProcess
from tests.e2e.ui.conftest import open_model

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
    for tab in ("node", "versions", "rollout", "jobs", "serving"):
        page.click(f"[role=tab]#tab-{tab}")
        results = axe.run(page, options={"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21aa"]}})
        assert results.violations_count == 0, results.generate_report()


def test_keyboard_navigation_between_nodes(page: Page, server: ServerProcess) -> None:
    open_model(page, server, "digits")
    page.focus("svg.graph")
    page.keyboard.press("ArrowDown")  # the first node
    expect(page.locator('[data-node-id="input"]')).to_be_focused()
    for expected in ("fc1", "relu1", "fc2"):
        page.keyboard.press("ArrowDown")
        expect(page.locator(f'[data-node-id="{expected}"]')).to_be_focused()
        expect(page.locator(f'[data-node-id="{expected}"]')).to_have_attribute("aria-pressed", "true")
    expect(page.locator('[data-panel-node="fc2"]')).to_be_visible()
    page.keyboard.press("ArrowUp")
    expect(page.locator('[data-node-id="relu1"]')).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator('[data-node-id][aria-pressed="true"]')).to_have_count(0)
