"""The fit jobs panel in a real browser against a real server (issue 29): a job started over HTTP appears with its
loss curve, its eval score before and after and the staged version it produced, which opens and is rolled out in
one click; a long job's curve grows while it runs, a cancel without the token is refused on the page and one with
it ends the job, and jobs are listed newest first.

Both check the panel's cards with axe-core. The page fixture fails any test whose page logged a console error, threw,
or requested anything outside the server (see conftest.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Locator, Page, expect
from safetensors.numpy import save as save_safetensors

from tests.conftest import AUTH, TOKEN, ServerProcess, serve_module
from tests.digits import digits
from tests.e2e.ui.conftest import Guard, edit, open_model, save_token

FRESH_HEAD = {"op": "replace", "node": "fc3", "layer": {"type": "Linear", "in_features": 64, "out_features": 10}}
#: Long enough to be watched and cancelled on a busy machine: the default --max-fit-steps (10,000) could end first.
LONG_STEPS = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from serve_module(tmp_path_factory, "--model", "digits", "--max-fit-steps", str(LONG_STEPS))


def _put_digits(server: ServerProcess, model: str) -> None:
    """`train` (the first 1,000 of scikit-learn's digits) and `heldout` (the other 797), labelled."""
    x, y = digits()
    for name, rows in (("train", slice(0, 1000)), ("heldout", slice(1000, None))):
        r = httpx.put(
            f"{server.url}/v1/models/{model}/datasets/{name}",
            headers={**AUTH, "Content-Type": "application/octet-stream"},
            content=save_safetensors({"input": x[rows], "labels": y[rows]}),
            timeout=60,
        )
        assert r.status_code == 201, r.text


def _fit(server: ServerProcess, model: str, **spec: Any) -> dict[str, Any]:
    body = {"train": ["fc3"], "dataset": "train", "lr": 0.02, "batch_size": 64, **spec}
    r = httpx.post(f"{server.url}/v1/models/{model}/fit", headers=AUTH, json=body, timeout=60)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _job(server: ServerProcess, model: str, job: str) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/v1/models/{model}/jobs/{job}", timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _points(curve: Locator) -> int:
    """The points the curve's polyline draws (not its data attribute: what is on the page)."""
    return len((curve.locator("polyline").get_attribute("points") or "").split())


def _assert_accessible(page: Page) -> None:
    """axe-core on the page with job cards shown, as tests/e2e/ui/test_accessibility.py checks every tab."""
    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21aa"]}})
    assert results.violations_count == 0, results.generate_report()


def _step(card: Locator) -> int:
    return int(card.locator('[data-stat="step"]').inner_text().split("/")[0].replace(",", ""))


def test_a_job_shows_its_curve_and_scores_and_its_staged_version_is_opened_and_rolled_out(
    page: Page, server: ServerProcess, fresh: str
) -> None:
    _put_digits(server, fresh)
    assert edit(server, fresh, [{**FRESH_HEAD, "seed": 7}]) == 2  # a fresh head: about chance before training
    open_model(page, server, fresh, version=2)
    page.click('[role=tab]:has-text("jobs")')
    expect(page.locator('[data-testid="jobs"]')).to_contain_text("No fit job yet")
    job = _fit(server, fresh, steps=300, eval="heldout")
    card = page.locator(f'[data-testid="jobs"] [data-job="{job["id"]}"]')
    expect(card).to_be_visible()
    expect(card).to_have_attribute("data-job-state", "succeeded", timeout=60_000)
    ended = _job(server, fresh, job["id"])
    assert ended["version"] == 3 and len(ended["loss_curve"]) == 300
    # The whole curve from the record, drawn; the scores before and after; the staged version it produced.
    curve = card.locator('[data-testid="loss-curve"]')
    expect(curve).to_have_attribute("data-points", "300")
    expect(curve).to_have_attribute("data-running", "false")
    assert _points(curve) == 300
    expect(card.locator('[data-stat="step"]')).to_have_text("300 / 300")
    before = float(card.locator('[data-stat="eval-before"]').inner_text().rstrip(" %"))
    after = float(card.locator('[data-stat="eval-after"]').inner_text().rstrip(" %"))
    assert before < 30 and after > 80, (before, after)  # trained, as the record says
    assert after == pytest.approx(ended["eval_after"]["accuracy"] * 100, abs=0.01)
    expect(card.locator("progress")).to_have_count(0)
    expect(card.locator("button:has-text('Cancel')")).to_have_count(0)
    produced = card.locator('[data-testid="job-version"]')
    expect(produced.locator("a")).to_have_text("v3")
    expect(produced.locator(".staged-tag")).to_have_text("staged")
    _assert_accessible(page)
    # The link opens the staged version; the page stays on the panel.
    produced.locator("a").click()
    expect(page.locator('svg.graph[data-version="3"]')).to_be_attached()
    assert "version=3" in page.url
    # One click from a rollout: the rollout panel opens with the job's version as its candidate.
    card.locator("button:has-text('Roll out v3')").click()
    expect(page.locator("[role=tab]#tab-rollout")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#ro-candidate")).to_have_value("3")
    # The diff of what the job trained, from the panel.
    page.click('[role=tab]:has-text("jobs")')
    card.locator("button:has-text('Diff v2 → v3')").click()
    expect(page.locator('svg.graph[data-version="3"][data-diff-from="2"] [data-node-id="fc3"]')).to_have_attribute(
        "data-diff", "changed"
    )


def test_a_long_job_grows_live_and_is_cancelled_with_the_token(
    page: Page, server: ServerProcess, fresh: str, guard: Guard
) -> None:
    guard.expected_statuses.add(401)  # the cancel tried before the token is typed in
    _put_digits(server, fresh)
    open_model(page, server, fresh)
    page.click('[role=tab]:has-text("jobs")')
    long = _fit(server, fresh, steps=LONG_STEPS)
    card = page.locator(f'[data-testid="jobs"] [data-job="{long["id"]}"]')
    expect(card).to_have_attribute("data-job-state", "running")
    expect(card.locator("progress")).to_be_visible()
    curve = card.locator('[data-testid="loss-curve"]')
    expect(curve).to_have_attribute("data-running", "true")
    expect(curve).not_to_have_attribute("data-points", re.compile(r"^[01]$"))  # two points or more
    assert _points(curve) >= 2
    _assert_accessible(page)  # a running job: its progress bar, its curve, its cancel
    # It grows while it runs: the page follows the job's events, nothing is reloaded.
    seen = _step(card)
    expect(card.locator('[data-stat="step"]')).not_to_have_text(re.compile(rf"^{seen:,} /"))
    assert _step(card) > seen
    assert any(u.endswith(f"/jobs/{long['id']}") for u in guard.requests)  # read again on a job event
    # Without the token the cancel is refused, on the page; the job runs on.
    card.locator("button:has-text('Cancel')").click()
    expect(page.locator('[data-testid="jobs"] .form-error')).to_be_visible()
    expect(page.locator(".token-error")).to_be_visible()
    assert _job(server, fresh, long["id"])["state"] == "running"
    # With it, the job ends, cancelled, and commits nothing.
    save_token(page, TOKEN)
    card.locator("button:has-text('Cancel')").click()
    expect(card).to_have_attribute("data-job-state", "cancelled")
    expect(card.locator('[data-testid="job-error"]')).to_have_text("cancelled by a client")
    expect(card.locator("button:has-text('Cancel')")).to_have_count(0)
    expect(card.locator('[data-testid="job-version"]')).to_have_count(0)
    expect(curve).to_have_attribute("data-running", "false")
    cancelled = _job(server, fresh, long["id"])
    assert (cancelled["state"], cancelled["version"]) == ("cancelled", None)
    assert 0 < cancelled["step"] < LONG_STEPS
    # The next job is listed first, newest first.
    short = _fit(server, fresh, steps=20)
    cards = page.locator('[data-testid="jobs"] article[data-job]')
    expect(cards).to_have_count(2)
    expect(cards.first).to_have_attribute("data-job", short["id"])
    expect(cards.first).to_have_attribute("data-job-state", "succeeded", timeout=60_000)
    expect(cards.nth(1)).to_have_attribute("data-job", long["id"])
