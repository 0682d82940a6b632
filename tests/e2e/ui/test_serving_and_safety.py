"""The page's live serving panel, and that it fetches nothing from outside the server, in a real browser against a
real server.

The page fixture fails any test whose page logged a console error, threw, or requested anything outside the
server (see conftest.py)."""

from __future__ import annotations

import re
import threading

import httpx
import numpy as np
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from tests.conftest import ServerProcess
from tests.e2e.ui.conftest import Guard, open_model


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
    assert any("/assets/layout.worker" in u for u in guard.requests)  # the layout worker is served by us too
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
