"""Swagger UI at ``/api`` in a real headless Chromium, with no way out of this machine.

Every request the page makes to anything but the service under test is refused, as in an
air-gapped deployment: the page must still load Swagger UI from the service, list every
operation of ``/api-json`` with its summary, and run one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Route, expect

from reservations.app import create_app
from reservations.settings import Settings

from ._browser import chromium, needs_chromium
from .observability._fixtures import LiveServer, serve

TIMEOUT_MS = 20_000
# The seed's operations, at least, must be there.
SEED_OPERATIONS = {
    ("post", "/user"),
    ("get", "/user/{user_id}"),
    ("post", "/event"),
    ("get", "/event/{event_id}"),
    ("post", "/reservation/{event_id}/{user_id}"),
    ("post", "/reservation"),
    ("get", "/reservation"),
}

pytestmark = needs_chromium


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    async for live in serve(create_app(settings)):
        yield live


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


async def test_swagger_ui_lists_and_runs_the_operations_without_internet(
    server: LiveServer, browser: Browser
) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 1000})
    served: list[str] = []
    refused: list[str] = []

    async def this_server_only(route: Route) -> None:
        url = route.request.url
        if url.startswith(f"{server.url}/"):
            served.append(url.removeprefix(server.url))
            await route.continue_()
        else:
            refused.append(url)
            await route.abort("internetdisconnected")

    await page.route("**/*", this_server_only)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{server.url}/api")

    await expect(page.locator(".information-container .title")).to_contain_text(
        "Event reservations", timeout=TIMEOUT_MS
    )
    document = (await server.client.get("/api-json")).json()
    operations = [
        (method, path, operation["summary"])
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    assert {(method, path) for method, path, _ in operations} >= SEED_OPERATIONS
    await expect(page.locator(".opblock")).to_have_count(len(operations))
    for method, path, summary in operations:
        operation = page.locator(f".opblock-{method}").filter(
            has=page.locator(f'.opblock-summary-path[data-path="{path}"]')
        )
        await expect(operation).to_have_count(1)
        await expect(operation.locator(".opblock-summary-method")).to_have_text(method.upper())
        await expect(operation.locator(".opblock-summary-description")).to_have_text(summary)

    # The page works, not only draws: GET /health, tried out from it.
    health = page.locator(".opblock-get").filter(
        has=page.locator('.opblock-summary-path[data-path="/health"]')
    )
    await health.locator(".opblock-summary-control").click()
    await health.get_by_role("button", name="Try it out").click()
    await health.get_by_role("button", name="Execute").click()
    status = health.locator(".live-responses-table tbody .response-col_status")
    await expect(status).to_have_text("200", timeout=TIMEOUT_MS)

    assert refused == [], f"the page reached off the server: {refused}"
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        assert f"/api/assets/{asset}" in served, served
    assert "/api-json" in served, served
    assert errors == []
