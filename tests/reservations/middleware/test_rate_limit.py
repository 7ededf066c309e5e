"""The per-client rate limit on reservation requests: 429 with Retry-After, nothing queued."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import ValidationError

from reservations.app import create_app
from reservations.middleware.rate_limit import RateLimit, RateLimiter, parse_rate
from reservations.resources import Resources
from reservations.settings import Settings

from ..conftest import Api, one_client_over, running_api
from ..helpers import create_event, create_user


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [("20/s", 20, 1), ("600/min", 600, 60), ("5 / 10s", 5, 10), ("100/hour", 100, 3600)],
)
def test_rates_parse(text: str, count: int, period: float) -> None:
    assert parse_rate(text) == RateLimit(count=count, period_s=period, burst=count)


@pytest.mark.parametrize("text", ["", "20", "fast", "0/s", "20/fortnight", "-1/s", "1/0s"])
def test_a_bad_rate_is_refused_with_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_a_bad_rate_setting_stops_the_start() -> None:
    with pytest.raises(ValidationError, match="is not of the form"):
        Settings(_env_file=None, RESERVATION_RATE_LIMIT="lots")


def test_the_burst_passes_then_one_request_per_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(parse_rate("2/s", burst=4), clock=clock)
    assert [limiter.check("a") for _ in range(4)] == [None] * 4
    wait = limiter.check("a")
    assert wait is not None and wait == pytest.approx(0.5)
    # A refused request does not use up the allowance.
    clock.now += 0.5
    assert limiter.check("a") is None
    assert limiter.check("a") == pytest.approx(0.5)
    # Another client has its own allowance.
    assert limiter.check("b") is None
    # After a quiet spell the whole burst is back, no more.
    clock.now += 10
    assert [limiter.check("a") is None for _ in range(5)] == [True] * 4 + [False]


def test_retry_after_is_whole_seconds_never_zero() -> None:
    assert RateLimiter.retry_after(0.01) == 1
    assert RateLimiter.retry_after(1.0) == 1
    assert RateLimiter.retry_after(1.2) == 2


@dataclass
class Limited:
    resources: Resources
    a: httpx.AsyncClient
    b: httpx.AsyncClient
    longest_wait_s: int


@pytest.fixture(params=["shared", "process"])
async def limited(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[Limited]:
    """The app with 3 reservation requests per minute per client, and two clients; the limit
    kept in Redis, or in the process."""
    update = {"reservation_rate_limit": "3/min", "reservation_rate_limit_scope": request.param}
    app = create_app(settings.model_copy(update=update))
    # GCRA lets one more through every 20 s; the moving window when the oldest of 3 is 60 s old.
    longest_wait_s = 60 if request.param == "shared" else 20
    async with app.router.lifespan_context(app):
        one = httpx.ASGITransport(app=app, client=("203.0.113.1", 40000))
        two = httpx.ASGITransport(app=app, client=("203.0.113.2", 40000))
        async with (
            httpx.AsyncClient(transport=one, base_url="http://test") as a,
            httpx.AsyncClient(transport=two, base_url="http://test") as b,
        ):
            yield Limited(app.state.resources, a, b, longest_wait_s)


async def test_over_the_limit_a_client_gets_429_with_retry_after_and_nothing_is_queued(
    limited: Limited,
) -> None:
    a, b, channel = limited.a, limited.b, limited.resources.channel
    event_id = await create_event(a, "Limited", 100)
    users = [await create_user(a, n) for n in range(5)]
    # The path form (served by the fast lane) and the body form share one allowance.
    assert (await a.post(f"/reservation/{event_id}/{users[0]}")).status_code == 202
    r = await a.post("/reservation", json={"eventId": event_id, "userId": users[1]})
    assert r.status_code == 202
    assert (await a.post(f"/reservation/{event_id}/{users[2]}")).status_code == 202
    for refused in (
        await a.post(f"/reservation/{event_id}/{users[3]}"),
        await a.post("/reservation", json={"eventId": event_id, "userId": users[3]}),
    ):
        assert refused.status_code == 429, refused.text
        retry_after = int(refused.headers["Retry-After"])
        assert 1 <= retry_after <= limited.longest_wait_s
        body = refused.json()
        assert body["error"] == "TOO_MANY_REQUESTS"
        assert "too many reservation requests" in body["message"]
    assert (await channel.stats()).waiting == 3
    # Another client is not held back by the first.
    assert (await b.post(f"/reservation/{event_id}/{users[4]}")).status_code == 202
    assert (await channel.stats()).waiting == 4


async def test_without_a_limit_configured_nothing_is_refused(api: Api) -> None:
    client = api.client
    event_id = await create_event(client, "Open", 100)
    users = [await create_user(client, n) for n in range(50)]
    statuses = {(await client.post(f"/reservation/{event_id}/{u}")).status_code for u in users}
    assert statuses == {202}


async def test_the_shared_limit_holds_across_api_processes(settings: Settings) -> None:
    """Two API instances on one Redis (as on two machines): a client that used its allowance on
    one is refused by the other."""
    limited = settings.model_copy(update={"reservation_rate_limit": "3/min"})
    async with running_api(limited) as one, running_api(limited) as two:
        event_id = await create_event(one.client, "Shared limit", 100)
        users = [await create_user(one.client, n) for n in range(5)]
        answers = await one_client_over([one, two, one, two], event_id, users[:4])
        assert answers == [202, 202, 202, 429]
