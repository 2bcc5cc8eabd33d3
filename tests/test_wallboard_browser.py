"""The wallboard page in a real headless Chromium (Debian's /usr/bin/chromium, driven by
playwright; no browser is downloaded): a caller joins a queue and the open page shows it
without a reload, then the caller leaves; the page says so when the stream drops and comes
back by itself. The screenshot is kept in tests/artifacts/."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from acd.tickets.callbacks import PendingSummary
from metrics.wallboard import WallboardServer
from tests.test_wallboard import Q1, Q2, Q3, T0, Desk

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# Generous: a loaded CI machine; expect() returns as soon as the page shows the text.
SHOWN = 15_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's Chromium at /usr/bin/chromium (apt install chromium)",
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        # --no-sandbox: the suite may run as root, where Chromium's sandbox refuses to start
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        yield browser
        await browser.close()


def _morning() -> Desk:
    """A desk at 10:30 with a morning behind it, nobody waiting in first level yet."""
    desk = Desk()
    for agent, queue, paused in [
        ("alice", Q1, ""),
        ("bob", Q1, ""),
        ("carol", Q1, ""),
        ("carol", Q2, ""),
        ("dave", Q2, "lunch"),
        ("erin", Q3, ""),
        ("frank", Q3, ""),
    ]:
        desk.member(T0, agent, queue, paused)
    for n in range(14):  # 09:00-10:10: short and long waits, a few abandons
        at = T0 + n * 300
        desk.answered_call(f"a{n}", Q1, ("alice", "bob")[n % 2], at, wait=(8, 15, 35)[n % 3])
    for n in range(5):
        desk.answered_call(f"b{n}", Q2, "carol", T0 + 60 + n * 700, wait=(20, 75)[n % 2])
        desk.answered_call(f"c{n}", Q3, "erin", T0 + 90 + n * 800, wait=12)
    desk.join(T0 + 4000, "x1", Q1)
    desk.hangup(T0 + 4040, "x1")
    now = T0 + 5400
    desk.join(now - 95, "w1", Q2, number="+4930777001")
    desk.join(now - 41, "w2", Q2, number="+4930777002")
    desk.join(now - 30, "w3", Q3, number="+4930777003")
    desk.ring(now - 3, "w3", "frank", Q3)
    desk.join(now - 20, "w4", Q3, number="+4930777004")
    desk.join(now - 200, "t1", Q3)
    desk.ring(now - 190, "t1", "erin", Q3)
    desk.answer(now - 185, "t1", "erin", Q3)
    utc = dt.datetime.fromtimestamp(now, dt.UTC)
    desk.pending = [
        PendingSummary(Q1, 2, utc - dt.timedelta(minutes=14, seconds=20)),
        PendingSummary(Q2, 1, utc - dt.timedelta(minutes=3, seconds=5)),
    ]
    return desk


NOW = T0 + 5400


async def _open(browser: Browser, port: int, problems: list[str] | None = None) -> Page:
    """The wallboard in a full-HD tab; script errors and console errors go to `problems`."""
    page = await browser.new_page(viewport={"width": 1920, "height": 1080})
    if problems is not None:
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on(
            "console",
            lambda message: problems.append(message.text) if message.type == "error" else None,
        )
    await page.goto(f"http://127.0.0.1:{port}/")
    return page


async def test_a_caller_joining_shows_on_the_open_page_and_leaves_it(browser: Browser) -> None:
    desk = _morning()
    server = WallboardServer("127.0.0.1", 0)
    await server.start()
    try:
        server.publish(desk.board(NOW))
        problems: list[str] = []
        page = await _open(browser, server.port, problems)
        first = page.locator(f'[data-queue="{Q1}"]')
        await expect(first.locator(".waiting-count")).to_have_text("0", timeout=SHOWN)
        await expect(first.locator(".caller")).to_have_count(0)
        await page.evaluate("window.notReloaded = true")

        desk.join(NOW + 1, "u1", Q1, number="+4930123456")
        server.publish(desk.board(NOW + 1))
        caller = first.locator(".caller")
        await expect(caller).to_have_count(1, timeout=SHOWN)
        await expect(caller).to_contain_text("#1")
        await expect(first.locator(".waiting-count")).to_have_text("1")
        await expect(page.locator("#waiting")).to_have_text("5")
        assert await page.evaluate("window.notReloaded") is True
        assert "4930123456" not in await page.content()  # the wall shows no numbers
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "wallboard.png")

        desk.ring(NOW + 3, "u1", "alice", Q1)
        desk.answer(NOW + 4, "u1", "alice", Q1)
        server.publish(desk.board(NOW + 4))
        await expect(caller).to_have_count(0, timeout=SHOWN)
        await expect(first.locator(".waiting-count")).to_have_text("0")
        await expect(page.locator("#waiting")).to_have_text("4")
        assert await page.evaluate("window.notReloaded") is True
        assert problems == []
    finally:
        await server.close()


async def test_the_page_says_when_the_stream_is_lost_and_comes_back(browser: Browser) -> None:
    desk = _morning()
    server = WallboardServer("127.0.0.1", 0)
    await server.start()
    port = server.port
    try:
        server.publish(desk.board(NOW))
        page = await _open(browser, port)
        await expect(page.locator("#status")).to_have_text("LIVE", timeout=SHOWN)
        await expect(page.locator("#lost")).to_be_hidden()
    finally:
        await server.close()

    await expect(page.locator("#lost")).to_be_visible(timeout=SHOWN)
    await expect(page.locator("#status")).to_have_text("OFFLINE")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "wallboard-lost.png")

    again = WallboardServer("127.0.0.1", port)
    await again.start()
    try:
        desk.join(NOW + 10, "u1", Q1)
        again.publish(desk.board(NOW + 10))
        await expect(page.locator("#lost")).to_be_hidden(timeout=SHOWN)
        await expect(page.locator(f'[data-queue="{Q1}"] .caller')).to_have_count(1)
    finally:
        await again.close()
