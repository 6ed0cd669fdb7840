"""End to end in a real browser: Debian's Chromium, headless, driven by Playwright.

The explorer serves the 2-round federation of conftest.py (a tampering member, a flagged
member) over HTTP on a loopback port. The test clicks from the rounds list to round 2 and on
to the flagged member, and checks what the browser shows against the chain and the report.
Playwright's own browsers cannot be downloaded here, so it drives the system Chromium
(`executable_path`); tools/setup.sh installs both (FLEML_BROWSER_TESTS=0 skips that).
Screenshots of the round and member pages go to $FLEML_EXPLORER_SCREENSHOTS when it is set
(the README's come from ``FLEML_EXPLORER_SCREENSHOTS=docs``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fleml_node.storage import IpfsStore, decode_report

from .conftest import MEMBERS

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


def chromium_path() -> str:
    found = os.environ.get("FLEML_CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser")
    if not found:
        pytest.skip("Chromium is not installed: tools/setup.sh installs Debian's chromium "
                    "(apt, as root or with sudo); or set FLEML_CHROMIUM")
    return found


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed: tools/setup.sh installs it from "
                    "requirements-browser.txt")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, headless=True,
                                      args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _screenshot(page, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("FLEML_EXPLORER_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)


def test_rounds_to_round_to_flagged_member(browser, served, explorer_federation, tmp_path):
    fed = explorer_federation.fed
    info = fed.reader.get_round(2)
    report = decode_report(IpfsStore(fed.ipfs_api).get(
        fed.round_event(2, "RoundFinalized").args["reportCid"], expected_hash=info.report_hash))
    by_member = {m["address"]: m for m in report["members"]}
    coefficients = {c["client_id"]: c["coefficient"] for c in report["defense"]["clients"]}

    page = browser.new_page(viewport={"width": 1500, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(served + "/")
    assert page.locator("h1").inner_text().startswith("Consortium")
    assert page.locator("#members").inner_text().count("<script>") == 1  # shown, as text

    page.click("#nav-rounds")
    rows = page.locator("#rounds tr")
    assert rows.count() == 3  # header, round 2, round 1
    assert "finalized" in rows.nth(1).inner_text()
    page.click("text=round 2")
    assert page.url.endswith("/rounds/2")
    assert page.locator("#round-status").inner_text() == "finalized"

    # the timeline: the chain's blocks and transactions
    finalized = fed.round_event(2, "RoundFinalized")
    timeline = page.locator("#timeline").inner_text()
    assert str(finalized.block_number) in timeline
    assert finalized.tx_hash[:10] in timeline
    # every submission's status, reason and coefficient as the report says
    subs = page.locator("#submissions tr.sub")
    assert subs.count() == MEMBERS
    for i in range(subs.count()):
        row = subs.nth(i)
        member = row.get_attribute("data-member")
        assert row.locator("td.status").inner_text() == by_member[member]["status"]
        if by_member[member]["status"] == "rejected":
            assert row.locator("td.reason").inner_text() == by_member[member]["reason"]
            assert row.locator("td.coefficient").inner_text() == "–"
        else:
            shown = float(row.locator("td.coefficient").inner_text())
            assert shown == pytest.approx(coefficients[member], rel=1e-3, abs=1e-9)
    tamper = page.locator(f'tr.sub[data-member="{explorer_federation.tamperer}"]')
    assert tamper.locator("td.status").inner_text() == "rejected"
    assert tamper.locator("td.reason").inner_text().startswith("tampered")
    assert page.locator("svg.chart").count() == 1
    _screenshot(page, "explorer-round.png", tmp_path)

    noisy = explorer_federation.noisy
    page.locator(f'tr.sub[data-member="{noisy}"] a.member-link').click()
    assert page.url.endswith(f"/members/{noisy}")
    assert page.locator("#member-address").inner_text() == noisy
    assert page.locator("#member-label").inner_text() == fed.reader.member_info(noisy)[3]
    history = page.locator("#history tr.h")
    assert history.count() == 2
    for i in range(2):
        row = history.nth(i)
        round_id = int(row.get_attribute("data-round"))
        assert fed.reader.is_flagged(round_id, noisy)
        assert row.locator("td.status").inner_text() == "flagged"
        assert float(row.locator("td.coefficient").inner_text()) == 0.0
    _screenshot(page, "explorer-member.png", tmp_path)
    assert errors == []
    page.close()
