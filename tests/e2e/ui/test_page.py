"""The web page in a real browser against a real server: the drawing, edits through the page, live updates from
other clients, diffs, the token, keyboard navigation, contrast, and the serving panel.

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

from tests.conftest import AUTH, TOKEN, ServerProcess
from tests.e2e.ui.conftest import Guard, drawn_ids, open_model


def _graph(server: ServerProcess, model: str, version: int | None = None) -> dict:
    params = {"version": version} if version else {}
    return httpx.get(f"{server.url}/v1/models/{model}/graph", params=params, timeout=30).json()


def _edit(server: ServerProcess, model: str, ops: list[dict]) -> int:
    r = httpx.post(f"{server.url}/v1/models/{model}/edits", headers=AUTH, json={"ops": ops}, timeout=60)
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


def _insert_op(name: str, after: str = "fc2", width: int = 64) -> dict:
    return {"op": "insert", "after": after, "name": name, "init": "identity",
            "layer": {"type": "Linear", "in_features": width, "out_features": width}}  # fmt: skip


def _save_token(page: Page, value: str) -> None:
    page.fill("#admin-token", value)
    page.click(".token button[type=submit]")


@pytest.mark.parametrize("model", ["digits", "resnet"])
def test_every_node_is_drawn_with_its_labels(page: Page, server: ServerProcess, model: str) -> None:
    open_model(page, server, model)
    g = _graph(server, model)
    assert sorted(drawn_ids(page)) == sorted(n["id"] for n in g["nodes"])
    assert page.locator("svg.graph").get_attribute("data-version") == str(g["version"])
    edges = page.locator("svg.graph path.edge")
    assert edges.count() == len(g["edges"])
    for n in g["nodes"]:
        el = page.locator(f'[data-node-id="{n["id"]}"]')
        text = el.text_content() or ""
        assert n["id"][:20] in text
        shape = "[" + ", ".join("?" if d == -1 else str(d) for d in n["shape"]) + "]"
        assert shape in text, (n["id"], text)
        if n["kind"] == "layer":
            assert n["layer"]["type"] in text
            assert el.evaluate("e => e.classList.value").count("cat-") == 1  # coloured by kind
    # the legend names the kinds drawn
    assert page.locator(".legend li").count() >= 3


def test_deep_links_open_a_version_and_a_node(page: Page, server: ServerProcess, fresh: str) -> None:
    _edit(server, fresh, [_insert_op("extra")])
    open_model(page, server, fresh, "?version=1&node=fc3", version=1)
    assert "extra" not in drawn_ids(page)
    expect(page.locator(".banner")).to_contain_text("Viewing v1; the model is at v2")
    expect(page.locator('[data-panel-node="fc3"]')).to_be_visible()
    expect(page.locator('[data-node-id="fc3"]')).to_have_attribute("aria-pressed", "true")
    page.click("text=Follow live")
    expect(page.locator('svg.graph[data-version="2"] [data-node-id="extra"]')).to_be_attached()


def test_node_panel_shows_config_shapes_weights_and_history(page: Page, server: ServerProcess, fresh: str) -> None:
    bias = {"shape": [10], "data": list(range(10))}
    _edit(server, fresh, [{"op": "set_weights", "node": "fc3", "tensors": {"bias": bias}}])
    open_model(page, server, fresh)
    page.click('[data-node-id="fc3"]')
    panel = page.locator('[data-panel-node="fc3"]')
    expect(panel).to_contain_text("in_features")
    expect(panel).to_contain_text("[?, 10]")
    expect(panel.locator('[data-testid="node-params"]')).to_have_text("650")
    bias = panel.locator('[data-tensor="bias"]')
    expect(bias.locator('[data-stat="mean"]')).to_have_text("4.500")
    expect(bias.locator('[data-stat="min"]')).to_have_text("0")
    expect(bias.locator('[data-stat="max"]')).to_have_text("9.000")
    expect(bias.locator('[data-stat="std"]')).to_have_text(f"{np.std(np.arange(10.0)):.4g}")
    history = panel.locator('[data-testid="node-history"] li')
    expect(history).to_have_count(2)
    expect(history.nth(1)).to_contain_text("v2 changed (weights)")
    history.nth(1).locator("button").click()  # opens the version with the diff from its parent
    expect(page.locator('svg.graph[data-diff-from="1"] [data-node-id="fc3"][data-diff="changed"]')).to_be_attached()


def test_an_edit_through_the_page_with_the_token(page: Page, server: ServerProcess, fresh: str) -> None:
    open_model(page, server, fresh)
    _save_token(page, TOKEN)
    page.click('[data-node-id="fc2"]')
    page.click("text=Insert after")
    expect(page.locator("select[name=layer-type]")).to_have_value("Linear")
    expect(page.locator("input[name=in_features]")).to_have_value("64")  # filled from fc2's output shape
    page.fill("input[name=node-name]", "ui_extra")
    page.click("button:has-text('Preview')")
    expect(page.locator('svg.graph[data-preview="true"] [data-node-id="ui_extra"][data-diff="added"]')).to_be_attached()
    expect(page.locator('[data-testid="preview-banner"]')).to_contain_text("adds ui_extra")
    assert _graph(server, fresh)["version"] == 1  # a dry run commits nothing
    page.click("button:has-text('Apply')")
    expect(page.locator('svg.graph[data-version="2"]:not([data-preview]) [data-node-id="ui_extra"]')).to_be_attached()
    g = _graph(server, fresh)
    assert g["version"] == 2 and g["ops"][0]["name"] == "ui_extra" and g["ops"][0]["init"] == "identity"
    # The token is kept for the browser session only.
    assert page.evaluate("sessionStorage.getItem('morphserve.token')") == TOKEN
    assert page.evaluate("Object.keys(localStorage).length") == 0
    # Remove and rollback from the page, too.
    page.click('[data-node-id="ui_extra"]')
    page.click(".actions button:has-text('Remove')")
    page.click(".edit-panel button[type=submit]")
    expect(page.locator('svg.graph[data-version="3"]')).to_be_attached()
    assert "ui_extra" not in drawn_ids(page)
    page.click('[role=tab]:has-text("versions")')
    page.click('button[aria-label="roll back to v2"]')
    expect(page.locator('svg.graph[data-version="4"] [data-node-id="ui_extra"]')).to_be_attached()
    assert _graph(server, fresh)["ops"] == [{"op": "rollback", "to": 2}]


def test_replace_from_the_page(page: Page, server: ServerProcess, fresh: str) -> None:
    open_model(page, server, fresh)
    _save_token(page, TOKEN)
    page.click('[data-node-id="fc3"]')
    page.click(".actions button:has-text('Replace')")
    expect(page.locator("input[name=out_features]")).to_have_value("10")  # starts from the node's own config
    page.fill("input[name=seed]", "7")
    page.click(".edit-panel button[type=submit]")
    expect(page.locator('svg.graph[data-version="2"]')).to_be_attached()
    assert _graph(server, fresh)["ops"][0] == {"op": "replace", "node": "fc3", "keep_weights": False, "seed": 7,
                                               "layer": {"type": "Linear", "in_features": 64, "out_features": 10,
                                                         "bias": True}}  # fmt: skip


def test_server_errors_are_shown_next_to_the_field_they_name(page: Page, server: ServerProcess, fresh: str,
                                                             guard: Guard) -> None:  # fmt: skip
    guard.expected_statuses.add(422)
    open_model(page, server, fresh)
    _save_token(page, TOKEN)
    page.click('[data-node-id="fc2"]')
    page.click("text=Insert after")
    page.fill("input[name=in_features]", "0")
    page.fill("input[name=out_features]", "lots")
    page.click("button:has-text('Preview')")
    expect(page.locator("#f-in_features-err")).to_contain_text("greater than or equal to 1")
    expect(page.locator("#f-out_features-err")).to_contain_text("valid integer")
    expect(page.locator("input[name=in_features]")).to_have_attribute("aria-invalid", "true")
    # A layer that does not fit its input: the server names the new node, shown at the layer's type.
    page.fill("input[name=in_features]", "32")
    page.fill("input[name=out_features]", "64")
    page.fill("input[name=node-name]", "misfit")
    page.select_option("select[name=init]", "default")
    page.click("button:has-text('Preview')")
    expect(page.locator("#f-type-err")).to_contain_text("does not fit its input")
    expect(page.locator("#f-in_features-err")).to_have_count(0)
    assert _graph(server, fresh)["version"] == 1


def test_an_edit_over_rest_by_another_client_appears_live(page: Page, server: ServerProcess, fresh: str) -> None:
    open_model(page, server, fresh)
    page.evaluate("window.__sameDocument = true")
    _edit(server, fresh, [_insert_op("rest_extra")])
    expect(page.locator('svg.graph[data-version="2"] [data-node-id="rest_extra"]')).to_be_attached()
    expect(page.locator(".toast")).to_contain_text("v2 is live")
    _edit(server, fresh, [{"op": "remove", "node": "rest_extra"}])
    expect(page.locator('svg.graph[data-version="3"]')).to_be_attached()
    assert "rest_extra" not in drawn_ids(page)
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    page.click('[role=tab]:has-text("versions")')
    expect(page.locator(".versions li")).to_have_count(3)


def test_diff_view_marks_added_removed_and_changed(page: Page, server: ServerProcess, fresh: str) -> None:
    _edit(server, fresh, [_insert_op("extra")])  # v2
    _edit(server, fresh, [{"op": "remove", "node": "relu1"}])  # v3
    _edit(
        server, fresh, [{"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [10], "data": [0.0] * 10}}}]
    )  # v4
    want = httpx.get(f"{server.url}/v1/models/{fresh}/diff", params={"from": 1, "to": 4}, timeout=30).json()
    open_model(page, server, fresh, "?diff=1", version=4)
    root = page.locator('svg.graph[data-diff-from="1"]')
    expect(root).to_be_attached()
    marks = dict(page.eval_on_selector_all("svg.graph [data-node-id][data-diff]",
                                           "els => els.map(e => [e.dataset.nodeId, e.dataset.diff])"))  # fmt: skip
    expected = {n: "added" for n in want["added"]} | {n: "removed" for n in want["removed"]}
    expected |= {c["id"]: "changed" for c in want["changed"]}
    assert marks == expected
    assert expected["extra"] == "added" and expected["relu1"] == "removed" and expected["fc3"] == "changed"
    banner = page.locator('[data-testid="diff-banner"]')
    expect(banner.locator(".m-added")).to_have_text("1 added")
    expect(banner.locator(".m-removed")).to_have_text("1 removed")
    expect(banner.locator(".m-changed")).to_have_text(f"{len(want['changed'])} changed")
    assert page.locator("svg.graph path.edge-removed").count() >= 1
    # From the timeline: the Δ of v2 shows what v2 changed.
    page.click('[role=tab]:has-text("versions")')
    page.click('button[aria-label="diff v1 to v2"]')
    expect(page.locator('svg.graph[data-version="2"][data-diff-from="1"] [data-node-id="extra"][data-diff="added"]')
           ).to_be_attached()  # fmt: skip
    assert "diff=1" in page.url and "version=2" in page.url


def test_a_wrong_token_shows_the_servers_403(page: Page, server: ServerProcess, fresh: str, guard: Guard) -> None:
    guard.expected_statuses.add(403)
    open_model(page, server, fresh)
    _save_token(page, "not-the-token")
    page.click('[data-node-id="relu1"]')
    page.click(".actions button:has-text('Remove')")
    page.click(".edit-panel button[type=submit]")
    expect(page.locator(".edit-panel .form-error")).to_have_text("the bearer token is not valid for this server")
    expect(page.locator(".token-error")).to_have_text("the bearer token is not valid for this server")
    assert _graph(server, fresh)["version"] == 1 and "relu1" in drawn_ids(page)


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


def test_groups_collapse_by_module_path(page: Page, server: ServerProcess) -> None:
    open_model(page, server, "resnet")
    expect(page.locator('[data-group-id="s1b1"][data-collapsed="false"]')).to_be_attached()
    page.click('[data-group-id="s1b1"] .container-head')
    expect(page.locator('[data-group-id="s1b1"][data-collapsed="true"]')).to_be_attached()
    ids = drawn_ids(page)
    assert not [i for i in ids if i.startswith("s1b1_")] and "s1b2_conv1" in ids
    page.click('[data-group-id="s1b1"][data-collapsed="true"]')
    expect(page.locator('[data-node-id="s1b1_conv1"]')).to_be_attached()


#: WCAG 2 contrast of every text of the drawing against its node's fill (axe checks the HTML, not SVG fills).
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
