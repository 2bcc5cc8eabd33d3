"""Live: the daemon's wallboard in a real headless Chromium while a real call waits.

A caller joins first-level on the live Asterisk; the open page shows them without a reload
(a marker set in the page would not survive one), then an agent takes the call and the
page shows the answer. The screenshot is kept in tests/artifacts/wallboard-live.png.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect

from acd.ami import AmiClient
from tests.live.harness import (
    DaemonProcess,
    collect,
    dial_feature_code,
    logout_everyone,
    place_call,
    wait_members,
)

pytestmark = pytest.mark.live

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
WALLBOARD = "http://127.0.0.1:9650/"
SHOWN = 15_000  # ms; expect() returns as soon as the page shows it


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():  # noqa: ASYNC240 - once, before any call
        pytest.fail("no /usr/bin/chromium: scripts/install-deps installs it")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        yield browser
        await browser.close()


async def test_a_waiting_caller_appears_on_the_open_wallboard_and_goes_when_answered(
    ami: AmiClient, daemon: DaemonProcess, browser: Browser
) -> None:
    await logout_everyone(ami)  # nobody free: the caller waits
    page = await browser.new_page(viewport={"width": 1920, "height": 1080})
    await page.goto(WALLBOARD)
    first = page.locator('[data-queue="first-level"]')
    await expect(page.locator("#status")).to_have_text("LIVE", timeout=SHOWN)
    await expect(first.locator(".waiting-count")).to_have_text("0", timeout=SHOWN)
    await page.evaluate("window.__notReloaded = true")

    uid = await place_call(ami, "4930555081", variables={"CALLER_HOLD": "60"})
    await collect(ami, uid, until="QueueCallerJoin", within=20)
    await expect(first.locator(".waiting-count")).to_have_text("1", timeout=SHOWN)
    await expect(first.locator(".caller")).to_have_count(1)
    assert await page.evaluate("window.__notReloaded === true")
    assert "4930555081" not in await page.content()  # no caller numbers on a wall screen
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "wallboard-live.png")

    await dial_feature_code(ami, "*21", "201")  # alice logs in and takes the call
    await wait_members(ami, "first-level", lambda m: "Local/alice@test-agents" in m)
    await collect(ami, uid, until="AgentConnect", within=20)
    await expect(first.locator(".waiting-count")).to_have_text("0", timeout=SHOWN)
    await expect(first.locator(".caller")).to_have_count(0)
    assert await page.evaluate("window.__notReloaded === true")
