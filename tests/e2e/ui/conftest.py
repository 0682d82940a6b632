"""Browser fixtures: Playwright driving Debian's Chromium against a real `morphserve serve`.

Every page is guarded: each request it makes is recorded through route interception (anything not addressed to
the server under test is aborted and fails the test), and console errors, uncaught exceptions and CSP
violations fail the test too. Playwright cannot download its own browser here, hence the system Chromium.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Route, expect, sync_playwright

from tests.conftest import AUTH, ServerProcess, serve_module

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
expect.set_options(timeout=30_000)  # a failure bound on a busy machine, not a speed assertion
_names = itertools.count()
_REFUSED = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")


# Package scope, not session: Playwright's sync API keeps an asyncio loop marked as running in the main thread
# until it stops, and every later test that starts a loop (asyncio.run, anyio) would fail with "another loop is
# running". Stopped after the last browser test, the rest of the suite is unaffected.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/_env.sh dev does)")
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from serve_module(tmp_path_factory, "--model", "digits", "--model", "resnet")


@dataclass
class Guard:
    """What a page did that it must not: reach outside the server, log an error, throw."""

    origin: str
    requests: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: HTTP statuses a test provokes on purpose: Chromium logs "Failed to load resource: ... status of 403" for them.
    expected_statuses: set[int] = field(default_factory=set)

    def route(self, route: Route) -> None:
        url = route.request.url
        self.requests.append(url)
        if url.startswith(self.origin + "/"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def console(self, msg: ConsoleMessage) -> None:
        if msg.type not in ("error", "assert"):
            return
        refused = _REFUSED.search(msg.text)
        if refused and int(refused.group(1)) in self.expected_statuses and msg.location["url"].startswith(self.origin):
            return
        self.errors.append(f"console {msg.type}: {msg.text} ({msg.location})")

    def check(self) -> None:
        assert not self.outside, f"the page fetched from outside the server: {self.outside}"
        assert not self.errors, "\n".join(self.errors)


@pytest.fixture
def guard(server: ServerProcess) -> Guard:
    return Guard(server.url)


@pytest.fixture
def page(browser: Browser, guard: Guard) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
    context.route("**/*", guard.route)
    p = context.new_page()
    p.on("console", guard.console)
    p.on("pageerror", lambda e: guard.errors.append(f"uncaught: {e}"))
    yield p
    context.close()
    guard.check()


@pytest.fixture
def fresh(server: ServerProcess) -> str:
    """A private copy of digits (version 1), so that tests that edit stay independent. It stays until the module's
    server stops: deleting it while the test's page is still open would show that page a deletion."""
    name = f"page{next(_names)}"
    r = httpx.post(f"{server.url}/v1/models", headers=AUTH, json={"name": name, "zoo": "digits"}, timeout=60)
    assert r.status_code == 201, r.text
    return name


def open_model(page: Page, server: ServerProcess, model: str, query: str = "", version: int | None = None) -> None:
    """Open a model's page and wait until its drawing shows `version` (default: the live one) and is live."""
    page.goto(f"{server.url}/ui/models/{model}{query}")
    if version is None:
        version = httpx.get(f"{server.url}/v1/models/{model}", timeout=30).json()["version"]
    expect(page.locator(f'svg.graph[data-version="{version}"]')).to_be_attached()
    expect(page.locator('[data-model-live="live"]')).to_be_attached()


def drawn_ids(page: Page) -> list[str]:
    return page.eval_on_selector_all("svg.graph [data-node-id]", "els => els.map(e => e.dataset.nodeId)")


def graph_of(server: ServerProcess, model: str, version: int | None = None) -> dict:
    params = {"version": version} if version else {}
    return httpx.get(f"{server.url}/v1/models/{model}/graph", params=params, timeout=30).json()


def edit(server: ServerProcess, model: str, ops: list[dict]) -> int:
    r = httpx.post(f"{server.url}/v1/models/{model}/edits", headers=AUTH, json={"ops": ops}, timeout=60)
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


def insert_op(name: str, after: str = "fc2", width: int = 64) -> dict:
    return {
        "op": "insert",
        "after": after,
        "name": name,
        "init": "identity",
        "layer": {"type": "Linear", "in_features": width, "out_features": width},
    }


def save_token(page: Page, value: str) -> None:
    page.fill("#admin-token", value)
    page.click(".token button[type=submit]")
