"""The README's screenshot of the web page (docs/img/ui.png), taken from a real run in a real browser."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.conftest import AUTH, ROOT, ServerProcess
from tests.e2e.ui.conftest import open_model

SCREENSHOT = ROOT / "docs" / "img" / "ui.png"


def test_screenshot_for_the_readme(page: Page, server: ServerProcess, tmp_path: Path) -> None:
    """The README's picture, from this run: an edit just landed on the zoo's resnet, shown as a diff. It is taken on
    every run; MORPHSERVE_UPDATE_SCREENSHOT=1 writes it to docs/img/ui.png (so a plain run leaves the tree clean)."""
    target = SCREENSHOT if os.environ.get("MORPHSERVE_UPDATE_SCREENSHOT") == "1" else tmp_path / "ui.png"
    name = "resnet_demo"
    r = httpx.post(f"{server.url}/v1/models", headers=AUTH, json={"name": name, "zoo": "resnet"}, timeout=120)
    assert r.status_code == 201, r.text
    ops = [
        {
            "op": "insert",
            "after": "s1b2_relu1",
            "name": "probe",
            "init": "identity",
            "layer": {
                "type": "Conv2d",
                "in_channels": 16,
                "out_channels": 16,
                "kernel_size": 3,
                "padding": 1,
                "bias": False,
            },
        },
        {"op": "replace", "node": "s1b2_bn2", "layer": {"type": "BatchNorm2d", "num_features": 16}},
    ]
    r = httpx.post(f"{server.url}/v1/models/{name}/edits", headers=AUTH, json={"ops": ops}, timeout=120)
    assert r.status_code == 200, r.text
    open_model(page, server, name, "?diff=1&node=probe", version=2)
    expect(page.locator('[data-node-id="probe"][data-diff="added"]')).to_be_attached()
    expect(page.locator('[data-panel-node="probe"] [data-testid="weights"]')).to_be_visible()
    page.wait_for_timeout(600)  # let the node slide-in and the view's pan to the selection settle for the picture
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target))
    assert target.stat().st_size > 20_000
