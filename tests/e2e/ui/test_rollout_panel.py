"""The rollout panel in a real browser against a real server (issue 25): a staged version rolled out from the
versions list, its gates filled in on the page, the live comparison and each version's numbers accruing as traffic
flows, the gates promoting it; a rollout by hand aborted with the token, and the diff of the two versions.

The page fixture fails any test whose page logged a console error, threw, or requested anything outside the
server (see conftest.py).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
from playwright.sync_api import Page, expect

from tests.conftest import AUTH, TOKEN, ServerProcess
from tests.e2e.ui.conftest import graph_of, insert_op, open_model, save_token

X = np.random.default_rng(0).random((4, 64)).tolist()


def _stage(server: ServerProcess, model: str, ops: list[dict[str, Any]]) -> int:
    r = httpx.post(f"{server.url}/v1/models/{model}/edits", headers=AUTH, json={"ops": ops, "stage": True}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["staged"]
    return int(r.json()["version"])


@contextmanager
def _traffic(server: ServerProcess, model: str) -> Iterator[None]:
    """Unversioned requests while the panel is watched (bounded: at most 5,000 requests or a minute)."""
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for _ in range(5000):
                if stop.is_set():
                    return
                assert c.post(f"/v1/models/{model}/infer", json={"inputs": X}).status_code == 200

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)


def test_a_staged_version_is_rolled_out_from_the_page_and_promoted_by_its_gates(
    page: Page, server: ServerProcess, fresh: str
) -> None:
    v2 = _stage(server, fresh, [insert_op("probe")])  # identity: the answers agree
    open_model(page, server, fresh, version=1)
    save_token(page, TOKEN)
    page.click('[role=tab]:has-text("versions")')
    staged = page.locator(f'.versions li[data-version="{v2}"]')
    expect(staged.locator(".staged-tag")).to_have_text("staged")
    staged.locator(f'button[aria-label="roll out v{v2}"]').click()
    expect(page.locator("#ro-candidate")).to_have_value(str(v2))
    page.fill("#ro-shadow", "100")
    page.fill("#ro-min-requests", "200")
    page.fill("#ro-min-agreement", "99")
    page.click("button:has-text('Start rollout')")
    card = page.locator(f'[data-testid="rollout"] [data-candidate="{v2}"]')
    expect(card).to_have_attribute("data-rollout-state", re.compile("running|promoted"))
    expect(card.locator('[data-gate="min_requests"]')).to_contain_text("requests ≥ 200")
    expect(card.locator('[data-gate="min_agreement"]')).to_contain_text("agreement ≥ 99.00 %")
    with _traffic(server, fresh):
        # the comparison and each version's numbers as they accrue; then the gates decide
        expect(card.locator('[data-stat="agreement"]')).to_have_text("100.00 %")
        expect(card.locator('tr[data-role="current"] [data-stat="p99"]')).to_contain_text("ms")  # served answers
        for side in ("current", "candidate"):  # both sides' compute on the shadowed requests
            expect(card.locator(f'tr[data-role="{side}"] [data-stat="shadow-p99"]')).to_contain_text("ms")
        expect(card).to_have_attribute("data-rollout-state", "promoted", timeout=60_000)
    expect(card.locator('[data-gate="min_requests"]')).to_have_attribute("data-ok", "pass")
    expect(card.locator('[data-gate="min_agreement"]')).to_have_attribute("data-ok", "pass")
    expect(card.locator('[data-testid="rollout-reason"]')).not_to_be_empty()
    assert int(card.locator('[data-stat="evidence"]').inner_text().replace(",", "")) >= 200
    # The page follows the promotion: the candidate is the live version, drawn as such.
    expect(page.locator(f'svg.graph[data-version="{v2}"] [data-node-id="probe"]')).to_be_attached()
    assert httpx.get(f"{server.url}/v1/models/{fresh}", timeout=30).json()["version"] == v2


def test_a_rollout_by_hand_is_watched_diffed_and_aborted_with_the_token(
    page: Page, server: ServerProcess, fresh: str
) -> None:
    fresh_head = {"op": "replace", "node": "fc3", "layer": {"type": "Linear", "in_features": 64, "out_features": 10}}
    v2 = _stage(server, fresh, [{**fresh_head, "seed": 7}])  # a new head: the answers disagree
    r = httpx.put(
        f"{server.url}/v1/models/{fresh}/rollout", headers=AUTH, json={"candidate": v2, "shadow": 1.0}, timeout=60
    )
    assert r.status_code == 201, r.text
    open_model(page, server, fresh)
    page.click('[role=tab]:has-text("rollout")')
    card = page.locator(f'[data-testid="rollout"] [data-candidate="{v2}"]')
    expect(card).to_have_attribute("data-rollout-state", "running")
    expect(card).to_contain_text("No gates: promote or abort by hand.")
    with _traffic(server, fresh):
        expect(card.locator('tr[data-role="candidate"] [data-stat="requests"]')).not_to_have_text("0")
        expect(card.locator('[data-stat="agreement"]')).not_to_have_text("—")
        expect(card.locator('tr[data-role="candidate"] [data-stat="rate"]')).to_contain_text("/s")
    agreement = float(card.locator('[data-stat="agreement"]').inner_text().rstrip(" %"))
    assert agreement < 100  # a fresh head does not agree with the trained one
    # The diff of the two graphs, from the panel.
    card.locator(f"button:has-text('Diff v1 → v{v2}')").click()
    expect(page.locator(f'svg.graph[data-version="{v2}"][data-diff-from="1"] [data-node-id="fc3"]')).to_have_attribute(
        "data-diff", "changed"
    )
    # Abort, with the token the page keeps.
    save_token(page, TOKEN)
    page.click('[role=tab]:has-text("rollout")')
    card.locator("button:has-text('Abort')").click()
    expect(card).to_have_attribute("data-rollout-state", "aborted")
    expect(card.locator('[data-testid="rollout-reason"]')).to_contain_text("aborted by hand")
    expect(card.locator("button:has-text('Promote')")).to_have_count(0)
    assert graph_of(server, fresh)["version"] == 1  # the current version stays
