"""The drawing in a real browser against a real server: every node with its labels, deep links to a version and a
node, the node panel, the diff view and groups by module path.

The page fixture fails any test whose page logged a console error, threw, or requested anything outside the
server (see conftest.py)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ServerProcess
from tests.e2e.ui.conftest import drawn_ids, edit, graph_of, insert_op, open_model


@pytest.mark.parametrize("model", ["digits", "resnet"])
def test_every_node_is_drawn_with_its_labels(page: Page, server: ServerProcess, model: str) -> None:
    open_model(page, server, model)
    g = graph_of(server, model)
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
    edit(server, fresh, [insert_op("extra")])
    open_model(page, server, fresh, "?version=1&node=fc3", version=1)
    assert "extra" not in drawn_ids(page)
    expect(page.locator(".banner")).to_contain_text("Viewing v1; the model is at v2")
    expect(page.locator('[data-panel-node="fc3"]')).to_be_visible()
    expect(page.locator('[data-node-id="fc3"]')).to_have_attribute("aria-pressed", "true")
    page.click("text=Follow live")
    expect(page.locator('svg.graph[data-version="2"] [data-node-id="extra"]')).to_be_attached()


def test_node_panel_shows_config_shapes_weights_and_history(page: Page, server: ServerProcess, fresh: str) -> None:
    bias = {"shape": [10], "data": list(range(10))}
    edit(server, fresh, [{"op": "set_weights", "node": "fc3", "tensors": {"bias": bias}}])
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


def test_diff_view_marks_added_removed_and_changed(page: Page, server: ServerProcess, fresh: str) -> None:
    edit(server, fresh, [insert_op("extra")])  # v2
    edit(server, fresh, [{"op": "remove", "node": "relu1"}])  # v3
    edit(
        server, fresh, [{"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [10], "data": [0.0] * 10}}}]
    )  # v4
    want = httpx.get(f"{server.url}/v1/models/{fresh}/diff", params={"from": 1, "to": 4}, timeout=30).json()
    open_model(page, server, fresh, "?diff=1", version=4)
    root = page.locator('svg.graph[data-diff-from="1"]')
    expect(root).to_be_attached()
    marks = dict(
        page.eval_on_selector_all(
            "svg.graph [data-node-id][data-diff]", "els => els.map(e => [e.dataset.nodeId, e.dataset.diff])"
        )
    )
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
    expect(
        page.locator('svg.graph[data-version="2"][data-diff-from="1"] [data-node-id="extra"][data-diff="added"]')
    ).to_be_attached()
    assert "diff=1" in page.url and "version=2" in page.url


def test_groups_collapse_by_module_path(page: Page, server: ServerProcess) -> None:
    open_model(page, server, "resnet")
    expect(page.locator('[data-group-id="s1b1"][data-collapsed="false"]')).to_be_attached()
    page.click('[data-group-id="s1b1"] .container-head')
    expect(page.locator('[data-group-id="s1b1"][data-collapsed="true"]')).to_be_attached()
    ids = drawn_ids(page)
    assert not [i for i in ids if i.startswith("s1b1_")] and "s1b2_conv1" in ids
    page.click('[data-group-id="s1b1"][data-collapsed="true"]')
    expect(page.locator('[data-node-id="s1b1_conv1"]')).to_be_attached()
