"""Edits through the page in a real browser against a real server: with the token, a replace, the server's errors
next to the field they name, a wrong token's 403, and edits by another client appearing live.

The page fixture fails any test whose page logged a console error, threw, or requested anything outside the
server (see conftest.py)."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.conftest import TOKEN, ServerProcess
from tests.e2e.ui.conftest import Guard, drawn_ids, edit, graph_of, insert_op, open_model, save_token


def test_an_edit_through_the_page_with_the_token(page: Page, server: ServerProcess, fresh: str) -> None:
    open_model(page, server, fresh)
    save_token(page, TOKEN)
    page.click('[data-node-id="fc2"]')
    page.click("text=Insert after")
    expect(page.locator("select[name=layer-type]")).to_have_value("Linear")
    expect(page.locator("input[name=in_features]")).to_have_value("64")  # filled from fc2's output shape
    page.fill("input[name=node-name]", "ui_extra")
    page.click("button:has-text('Preview')")
    expect(page.locator('svg.graph[data-preview="true"] [data-node-id="ui_extra"][data-diff="added"]')).to_be_attached()
    expect(page.locator('[data-testid="preview-banner"]')).to_contain_text("adds ui_extra")
    assert graph_of(server, fresh)["version"] == 1  # a dry run commits nothing
    page.click("button:has-text('Apply')")
    expect(page.locator('svg.graph[data-version="2"]:not([data-preview]) [data-node-id="ui_extra"]')).to_be_attached()
    g = graph_of(server, fresh)
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
    assert graph_of(server, fresh)["ops"] == [{"op": "rollback", "to": 2}]


def test_replace_from_the_page(page: Page, server: ServerProcess, fresh: str) -> None:
    open_model(page, server, fresh)
    save_token(page, TOKEN)
    page.click('[data-node-id="fc3"]')
    page.click(".actions button:has-text('Replace')")
    expect(page.locator("input[name=out_features]")).to_have_value("10")  # starts from the node's own config
    page.fill("input[name=seed]", "7")
    page.click(".edit-panel button[type=submit]")
    expect(page.locator('svg.graph[data-version="2"]')).to_be_attached()
    assert graph_of(server, fresh)["ops"][0] == {
        "op": "replace",
        "node": "fc3",
        "keep_weights": False,
        "seed": 7,
        "layer": {"type": "Linear", "in_features": 64, "out_features": 10, "bias": True},
    }


def test_server_errors_are_shown_next_to_the_field_they_name(
    page: Page, server: ServerProcess, fresh: str, guard: Guard
) -> None:
    guard.expected_statuses.add(422)
    open_model(page, server, fresh)
    save_token(page, TOKEN)
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
    assert graph_of(server, fresh)["version"] == 1


def test_an_edit_over_rest_by_another_client_appears_live(page: Page, server: ServerProcess, fresh: str) -> None:
    open_model(page, server, fresh)
    page.evaluate("window.__sameDocument = true")
    edit(server, fresh, [insert_op("rest_extra")])
    expect(page.locator('svg.graph[data-version="2"] [data-node-id="rest_extra"]')).to_be_attached()
    expect(page.locator(".toast")).to_contain_text("v2 is live")
    edit(server, fresh, [{"op": "remove", "node": "rest_extra"}])
    expect(page.locator('svg.graph[data-version="3"]')).to_be_attached()
    assert "rest_extra" not in drawn_ids(page)
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    page.click('[role=tab]:has-text("versions")')
    expect(page.locator(".versions li")).to_have_count(3)


def test_a_wrong_token_shows_the_servers_403(page: Page, server: ServerProcess, fresh: str, guard: Guard) -> None:
    guard.expected_statuses.add(403)
    open_model(page, server, fresh)
    save_token(page, "not-the-token")
    page.click('[data-node-id="relu1"]')
    page.click(".actions button:has-text('Remove')")
    page.click(".edit-panel button[type=submit]")
    expect(page.locator(".edit-panel .form-error")).to_have_text("the bearer token is not valid for this server")
    expect(page.locator(".token-error")).to_have_text("the bearer token is not valid for this server")
    assert graph_of(server, fresh)["version"] == 1 and "relu1" in drawn_ids(page)
