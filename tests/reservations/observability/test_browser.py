"""The queue dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

A real run: the service under uvicorn with the admin token set, reservations through its HTTP
API finished by a real consumer, a test channel with messages that succeed and three that fail
into the dead letters. The page must show those numbers, and its delete and redrive buttons must
empty the dead letters. ``UPDATE_SCREENSHOTS=1`` rewrites ``docs/dashboard.png`` from this run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from reservations.app import create_app
from reservations.observability import install
from reservations.settings import Settings
from reservations.worker import consuming

from .._browser import chromium, needs_chromium
from ..helpers import create_event, create_user, eventually
from ._fixtures import (
    ADMIN_TOKEN,
    TEST_CHANNEL,
    Job,
    LiveServer,
    failing_handler,
    serve,
    settings_with_token,
)

SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "dashboard.png"
TIMEOUT_MS = 20_000

pytestmark = needs_chromium


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    app = create_app(settings_with_token(settings, ADMIN_TOKEN))
    install(app)
    async for live in serve(app):
        live.client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        yield live


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


def count(page: Page, channel: str, name: str) -> object:
    return page.locator(f'section[data-channel="{channel}"] [data-count="{name}"]')


async def polls(page: Page) -> int:
    return int(await page.evaluate("Number(document.body.dataset.polls || 0)"))


async def wait_for_polls(page: Page, n: int) -> None:
    """Until the page has fetched and drawn ``n`` more overviews."""
    start = await polls(page)
    await page.wait_for_function(
        f"Number(document.body.dataset.polls || 0) >= {start + n}", timeout=TIMEOUT_MS
    )


async def test_dashboard_shows_a_real_run_and_redrives_dead_letters(
    server: LiveServer, browser: Browser
) -> None:
    client = server.client
    page = await browser.new_page(viewport={"width": 1360, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{server.url}/admin/queue?interval=300")

    # The token is configured: the page asks for it before showing anything.
    await expect(page.locator("#login")).to_be_visible(timeout=TIMEOUT_MS)
    await expect(page.locator("#status")).to_have_text("admin token needed")
    await page.fill("#token", "not-the-token")
    await page.click("#login button[type=submit]")
    await expect(page.locator("#login-error")).to_have_text("the admin token is not valid")
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("#login button[type=submit]")
    await expect(page.locator("#main")).to_be_visible(timeout=TIMEOUT_MS)
    await expect(page.locator('section[data-channel="reservation-queue"]')).to_be_visible()

    # Reservations through the API, finished by a real consumer, in bursts the chart can show.
    big = await create_event(client, "Seoul drop 2030", 60)
    small = await create_event(client, "Busan matinee", 40)
    users = [await create_user(client, n) for n in range(90)]
    resources = server.resources
    async with consuming(resources, max_parallel=32):
        for start in range(0, len(users), 15):
            for user_id in users[start : start + 15]:
                r = await client.post(f"/reservation/{big}/{user_id}")
                assert r.status_code == 202, r.text
            for user_id in users[start : start + 3]:
                assert (await client.post(f"/reservation/{small}/{user_id}")).status_code == 202
            await wait_for_polls(page, 3)
        await eventually(
            resources.channel.stats, lambda s: s.processed == 108, what="108 requests processed"
        )

    # A test channel: good messages, and three that fail twice into the dead letters.
    test_channel = resources.queue.channel(
        TEST_CHANNEL, Job, max_attempts=2, retry_backoff="10ms", max_retry_backoff="20ms"
    )
    consumer = await test_channel.consume(failing_handler, max_parallel=4)
    try:
        for burst in range(4):
            await test_channel.produce_many([Job(100 * burst + n) for n in range(40)])
            await wait_for_polls(page, 3)
        for n in (7, 8, 9):
            await test_channel.produce(Job(n, fail=True))
        await eventually(
            test_channel.stats, lambda s: s.dead == 3 and s.processed == 160, what="3 dead"
        )
    finally:
        await consumer.close()

    # The numbers on the page are the broker's and the database's.
    queue = "reservation-queue"
    for name, value in (("processed", "108"), ("produced", "108"), ("waiting", "0"),
                        ("in_flight", "0"), ("dead", "0")):  # fmt: skip
        await expect(count(page, queue, name)).to_have_attribute("data-value", value)
    for name, value in (("processed", "160"), ("dead", "3"), ("retried", "3")):
        await expect(count(page, TEST_CHANNEL, name)).to_have_attribute("data-value", value)
    await expect(count(page, TEST_CHANNEL, "dead").locator(".value")).to_have_text("3")

    for event_id in (big, small):
        event = (await client.get(f"/event/{event_id}")).json()
        row = page.locator(f'#events tr[data-event-id="{event_id}"]')
        await expect(row.locator('[data-field="capacity"]')).to_have_text(str(event["maxTickets"]))
        await expect(row.locator('[data-field="reserved"]')).to_have_text(
            str(event["reservedTickets"])
        )
        await expect(row.locator('[data-field="remaining"]')).to_have_text(
            str(event["remainingTickets"])
        )
    assert (await client.get(f"/event/{big}")).json()["remainingTickets"] == 0

    dead_rows = page.locator(f'section[data-channel="{TEST_CHANNEL}"] .dead-table tbody tr')
    await expect(dead_rows).to_have_count(3)
    letters = {d.id: d for d in await test_channel.dead_letters()}
    for i in range(3):
        row = dead_rows.nth(i)
        letter = letters[str(await row.get_attribute("data-dead-id"))]
        await expect(row.locator("td").nth(1)).to_have_text(str(letter.tries))
        await expect(row.locator(".error-text")).to_have_text(letter.error)
        await expect(row.locator("pre.payload")).to_have_text(letter.payload.decode())
    # The throughput chart has drawn its lines.
    chart = page.locator(f'section[data-channel="{queue}"] svg.throughput polyline.processed')
    await expect(chart).to_have_count(1)

    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        await page.locator("#status").evaluate("el => el.dataset.state = 'live'")
        await page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Delete one dead letter from its row, redrive another from its row, the rest with
    # "Redrive all".
    await dead_rows.filter(has_text='{"n":9,"fail":true}').locator("button.delete").click()
    await expect(count(page, TEST_CHANNEL, "dead")).to_have_attribute("data-value", "2")
    await expect(dead_rows).to_have_count(2)
    assert {d.data.n for d in await test_channel.dead_letters() if d.data} == {7, 8}
    await dead_rows.first.locator("button.redrive").click()
    await expect(count(page, TEST_CHANNEL, "dead")).to_have_attribute("data-value", "1")
    await expect(count(page, TEST_CHANNEL, "waiting")).to_have_attribute("data-value", "1")
    await expect(dead_rows).to_have_count(1)
    await page.locator(f'section[data-channel="{TEST_CHANNEL}"] button.redrive-all').click()
    await expect(count(page, TEST_CHANNEL, "dead")).to_have_attribute("data-value", "0")
    await expect(count(page, TEST_CHANNEL, "waiting")).to_have_attribute("data-value", "2")
    await expect(page.locator(f'section[data-channel="{TEST_CHANNEL}"] .no-dead')).to_be_visible()
    stats = await test_channel.stats()
    assert (stats.dead, stats.waiting) == (0, 2)
    assert errors == []
