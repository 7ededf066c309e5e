"""A client's mistakes get a clear 4xx, never a 5xx, and change nothing.

Each case sends one bad request to the real app (real PostgreSQL and Redis) after seeding a user
and an event, then checks the status, that the body is the project's JSON error with a message
naming the problem, and that no row was written and nothing was queued.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from .conftest import Api
from .helpers import create_event, create_user, eventually

INT32_OVER = 2**31  # one past PostgreSQL's integer
INT64_OVER = 2**63  # one past PostgreSQL's bigint
HUGE = "9" * 100
MAX_BODY = 64 * 1024  # the default MAX_BODY_BYTES
TABLES = ("users", "events", "reservations", "reservation_requests")
USER = {"name": "Peter", "email": "peter@example.com"}
EVENT = {"name": "Gig", "date": "2030-05-01T19:00:00Z", "location": "Seoul", "maxTickets": 3}
JSON = {"content-type": "application/json"}


@dataclass
class Bad:
    """One bad request and what the answer must say."""

    method: str
    url: str
    status: int
    words: tuple[str, ...]
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    async def send(self, client: httpx.AsyncClient, admin: dict[str, str]) -> httpx.Response:
        kwargs: dict[str, Any] = {"headers": {**admin, **self.headers}}
        if self.content is not None:
            kwargs["content"] = self.content
        elif self.json is not None:
            kwargs["json"] = self.json
        return await client.request(self.method, self.url, **kwargs)


def _case(id_: str, bad: Bad, *marks: pytest.MarkDecorator) -> Any:
    return pytest.param(bad, id=id_, marks=marks)


MALFORMED = [
    _case(
        "user-truncated",
        Bad("POST", "/user", 422, ("json",), content=b'{"name": "a", "em', headers=JSON),
    ),
    _case(
        "user-not-json",
        Bad("POST", "/user", 422, ("json",), content=b"name=a&email=b", headers=JSON),
    ),
    _case(
        "user-empty-body",
        Bad("POST", "/user", 422, ("body", "required"), content=b"", headers=JSON),
    ),
    _case("user-no-body", Bad("POST", "/user", 422, ("body", "required"))),
    _case(
        "user-wrong-content-type",
        Bad(
            "POST",
            "/user",
            422,
            ("body",),
            content=b'{"name": "a", "email": "a@b.c"}',
            headers={"content-type": "text/plain"},
        ),
    ),
    _case(
        "user-invalid-utf8",
        Bad("POST", "/user", 400, ("utf-8",), content=b'{"name": "\xff\xfe"}', headers=JSON),
    ),
    _case(
        "reservation-truncated",
        Bad("POST", "/reservation", 422, ("json",), content=b'{"userId": 1, ', headers=JSON),
    ),
    _case(
        "reservation-not-json",
        Bad("POST", "/reservation", 422, ("json",), content=b"userId=1&eventId=1", headers=JSON),
    ),
    _case(
        "reservation-empty-body",
        Bad("POST", "/reservation", 422, ("body", "required"), content=b"", headers=JSON),
    ),
    _case(
        "reservation-trailing-garbage",
        Bad(
            "POST",
            "/reservation",
            422,
            ("json",),
            content=b'{"userId": 1, "eventId": 1}}',
            headers=JSON,
        ),
    ),
    _case(
        "event-truncated", Bad("POST", "/event", 422, ("json",), content=b'{"name": ', headers=JSON)
    ),
    _case(
        "event-empty-body",
        Bad("POST", "/event", 422, ("body", "required"), content=b"", headers=JSON),
    ),
]

WRONG_TYPES = [
    _case("user-name-int", Bad("POST", "/user", 422, ("name", "string"), json={**USER, "name": 5})),
    _case("user-body-list", Bad("POST", "/user", 422, ("body",), json=[USER])),
    _case("user-body-null", Bad("POST", "/user", 422, ("body",), content=b"null", headers=JSON)),
    _case("user-body-string", Bad("POST", "/user", 422, ("body",), json="Peter")),
    _case("user-name-null", Bad("POST", "/user", 422, ("name",), json={**USER, "name": None})),
    _case(
        "user-email-object", Bad("POST", "/user", 422, ("email",), json={**USER, "email": {"a": 1}})
    ),
    _case(
        "reservation-id-string",
        Bad(
            "POST", "/reservation", 422, ("userId", "integer"), json={"userId": "one", "eventId": 1}
        ),
    ),
    _case(
        "reservation-id-list",
        Bad("POST", "/reservation", 422, ("eventId",), json={"userId": 1, "eventId": [1]}),
    ),
    _case(
        "reservation-id-object",
        Bad("POST", "/reservation", 422, ("eventId",), json={"userId": 1, "eventId": {"id": 1}}),
    ),
    _case(
        "reservation-id-null",
        Bad("POST", "/reservation", 422, ("userId",), json={"userId": None, "eventId": 1}),
    ),
    _case(
        "reservation-id-bool",
        Bad("POST", "/reservation", 422, ("userId",), json={"userId": True, "eventId": 1}),
    ),
    _case(
        "reservation-id-fraction",
        Bad("POST", "/reservation", 422, ("userId",), json={"userId": 1.5, "eventId": 1}),
    ),
    _case(
        "reservation-missing-id",
        Bad("POST", "/reservation", 422, ("eventId", "required"), json={"userId": 1}),
    ),
    _case(
        "event-max-tickets-string",
        Bad("POST", "/event", 422, ("maxTickets",), json={**EVENT, "maxTickets": "ten"}),
    ),
    _case(
        "event-date-int-list",
        Bad("POST", "/event", 422, ("date",), json={**EVENT, "date": [2030, 5, 1]}),
    ),
    _case(
        "event-max-tickets-negative",
        Bad("POST", "/event", 422, ("maxTickets",), json={**EVENT, "maxTickets": -1}),
    ),
    _case(
        "event-max-tickets-int64",
        Bad("POST", "/event", 422, ("maxTickets",), json={**EVENT, "maxTickets": INT64_OVER}),
    ),
]


def _id_cases() -> list[Any]:
    cases = []
    values = {
        "zero": "0",
        "negative": "-1",
        "int32-over": str(INT32_OVER),
        "int64-over": str(INT64_OVER),
        "huge": HUGE,
        "text": "abc",
    }
    for label, value in values.items():
        for route, url, field_name in [
            ("get-user", f"/user/{value}", "user_id"),
            ("get-event", f"/event/{value}", "event_id"),
            ("get-reservation", f"/reservation/{value}", "reservation_id"),
            ("event-reservations", f"/event/{value}/reservations", "event_id"),
            ("post-reservation-event", f"/reservation/{value}/1", "event_id"),
            ("post-reservation-user", f"/reservation/1/{value}", "user_id"),
        ]:
            method = "POST" if route.startswith("post") else "GET"
            cases.append(_case(f"path-{route}-{label}", Bad(method, url, 422, (field_name,))))
        cases.append(
            _case(
                f"query-event-id-{label}",
                Bad("GET", f"/reservation?eventId={value}&userId=1", 422, ("eventId",)),
            )
        )
        cases.append(
            _case(
                f"query-limit-{label}",
                Bad("GET", f"/event/1/reservations?limit={value}", 422, ("limit",)),
            )
        )
        if label not in ("zero", "int32-over"):  # 0 and 2**31 are valid offsets
            cases.append(
                _case(
                    f"query-offset-{label}",
                    Bad("GET", f"/event/1/reservations?offset={value}", 422, ("offset",)),
                )
            )
        if label != "text":
            number = int(value)
            cases.append(
                _case(
                    f"body-user-id-{label}",
                    Bad(
                        "POST",
                        "/reservation",
                        422,
                        ("userId",),
                        json={"userId": number, "eventId": 1},
                    ),
                )
            )
            cases.append(
                _case(
                    f"body-event-id-{label}",
                    Bad(
                        "POST",
                        "/reservation",
                        422,
                        ("eventId",),
                        json={"userId": 1, "eventId": number},
                    ),
                )
            )
    return cases


ROUTES = [
    _case("unknown-get", Bad("GET", "/nope", 404, ("no route", "/nope"))),
    _case("unknown-post", Bad("POST", "/users", 404, ("no route", "/users"), json=USER)),
    _case("unknown-deeper", Bad("GET", "/user/1/extra", 404, ("no route",))),
    _case("unknown-reservation-deeper", Bad("POST", "/reservation/1/1/1", 404, ("no route",))),
    _case("method-delete-user", Bad("DELETE", "/user/1", 405, ("delete", "not allowed", "get"))),
    _case("method-put-event", Bad("PUT", "/event/1", 405, ("put", "not allowed"))),
    _case("method-patch-reservation", Bad("PATCH", "/reservation", 405, ("patch", "not allowed"))),
    _case("method-get-user-collection", Bad("GET", "/user", 405, ("get", "not allowed", "post"))),
    _case("method-get-reserve", Bad("GET", "/reservation/1/1", 405, ("get", "not allowed"))),
]

STRINGS = [
    _case(
        "user-name-nul",
        Bad("POST", "/user", 422, ("name", "control"), json={**USER, "name": "Pe\x00ter"}),
    ),
    _case(
        "user-name-escape",
        Bad("POST", "/user", 422, ("name", "control"), json={**USER, "name": "\x1b[31mred"}),
    ),
    _case(
        "user-name-newline",
        Bad("POST", "/user", 422, ("name", "control"), json={**USER, "name": "a\nb"}),
    ),
    _case(
        "user-email-nul", Bad("POST", "/user", 422, ("email",), json={**USER, "email": "a\x00@b.c"})
    ),
    _case(
        "user-name-lone-surrogate",
        Bad(
            "POST",
            "/user",
            422,
            ("name", "unicode"),
            content=b'{"name": "a\\ud800b", "email": "p@e.com"}',
            headers=JSON,
        ),
    ),
    _case(
        "user-name-too-long",
        Bad("POST", "/user", 422, ("name", "200"), json={**USER, "name": "x" * 201}),
    ),
    _case("user-name-empty", Bad("POST", "/user", 422, ("name",), json={**USER, "name": ""})),
    _case(
        "event-name-nul",
        Bad("POST", "/event", 422, ("name", "control"), json={**EVENT, "name": "\x00"}),
    ),
    _case(
        "event-location-bell",
        Bad(
            "POST", "/event", 422, ("location", "control"), json={**EVENT, "location": "Seoul\x07"}
        ),
    ),
    _case(
        "event-location-lone-surrogate",
        Bad(
            "POST",
            "/event",
            422,
            ("location", "unicode"),
            content=b'{"name": "n", "date": "2030-05-01T19:00:00Z", "location": "\\udfff", '
            b'"maxTickets": 1}',
            headers=JSON,
        ),
    ),
    _case("request-id-nul", Bad("GET", "/reservation/requests/a%00b", 404, (r"a\x00b",))),
    _case(
        "request-id-unicode", Bad("GET", "/reservation/requests/%F0%9F%98%80", 404, ("\U0001f600",))
    ),
    _case("request-id-too-long", Bad("GET", "/reservation/requests/" + "x" * 65, 422, ("job_id",))),
]

# Dates the database cannot hold once converted to UTC: outside years 1 to 9999 (Python's range),
# or the very first or last microsecond of it, which asyncpg stores as -infinity and infinity.
DATE_RANGE = ("date", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "utc")
DATES = [
    _case(
        "event-date-after-9999-in-utc",
        Bad("POST", "/event", 422, DATE_RANGE, json={**EVENT, "date": "9999-12-31T23:59:59-14:00"}),
    ),
    _case(
        "event-date-before-year-1-in-utc",
        Bad("POST", "/event", 422, DATE_RANGE, json={**EVENT, "date": "0001-01-01T00:00:00+14:00"}),
    ),
    _case(
        "event-date-one-minute-offset-past-9999",
        Bad(
            "POST",
            "/event",
            422,
            DATE_RANGE,
            json={**EVENT, "date": "9999-12-31T23:59:59.999999-00:01"},
        ),
    ),
    _case(
        "event-date-last-microsecond",
        Bad(
            "POST", "/event", 422, DATE_RANGE, json={**EVENT, "date": "9999-12-31T23:59:59.999999Z"}
        ),
    ),
    _case(
        "event-date-first-microsecond",
        Bad("POST", "/event", 422, DATE_RANGE, json={**EVENT, "date": "0001-01-01T00:00:00Z"}),
    ),
    _case(
        "event-date-naive-first-microsecond",
        Bad("POST", "/event", 422, DATE_RANGE, json={**EVENT, "date": "0001-01-01"}),
    ),
    _case(
        "event-date-year-10000",
        Bad("POST", "/event", 422, ("date",), json={**EVENT, "date": "10000-01-01T00:00:00Z"}),
    ),
    _case(
        "event-max-tickets-bool",
        Bad("POST", "/event", 422, ("maxTickets", "boolean"), json={**EVENT, "maxTickets": True}),
    ),
]

# The dashboard's dead-letter page: Redis reads it by index, a signed 64-bit integer, so the
# page's last index (offset + limit - 1, limit at most 1000) must fit one.
DEAD_LETTERS = "/admin/queue/api/dead-letters?channel=reservation-queue"
MAX_DEAD_OFFSET = 2**63 - 1000
DASHBOARD = [
    _case(
        "dashboard-offset-past-bound",
        Bad(
            "GET",
            f"{DEAD_LETTERS}&offset={MAX_DEAD_OFFSET + 1}",
            422,
            ("offset", str(MAX_DEAD_OFFSET)),
        ),
    ),
    _case(
        "dashboard-offset-int64-over",
        Bad("GET", f"{DEAD_LETTERS}&offset={INT64_OVER}", 422, ("offset", str(MAX_DEAD_OFFSET))),
    ),
    _case("dashboard-offset-huge", Bad("GET", f"{DEAD_LETTERS}&offset={HUGE}", 422, ("offset",))),
    _case("dashboard-offset-negative", Bad("GET", f"{DEAD_LETTERS}&offset=-1", 422, ("offset",))),
    _case("dashboard-offset-text", Bad("GET", f"{DEAD_LETTERS}&offset=abc", 422, ("offset",))),
    _case("dashboard-limit-zero", Bad("GET", f"{DEAD_LETTERS}&limit=0", 422, ("limit",))),
    _case("dashboard-limit-over", Bad("GET", f"{DEAD_LETTERS}&limit=1001", 422, ("limit", "1000"))),
]

EXTRA_FIELDS = [
    _case(
        "user-extra",
        Bad("POST", "/user", 422, ("isAdmin", "extra"), json={**USER, "isAdmin": True}),
    ),
    _case(
        "reservation-extra",
        Bad(
            "POST",
            "/reservation",
            422,
            ("status", "extra"),
            json={"userId": 1, "eventId": 1, "status": "RESERVED"},
        ),
    ),
    _case(
        "event-extra",
        Bad(
            "POST",
            "/event",
            422,
            ("reservedTickets", "extra"),
            json={**EVENT, "reservedTickets": 3},
        ),
    ),
]


@pytest.fixture
async def seeded(api: Api, db: asyncpg.Connection) -> dict[str, int]:
    """A user and an event exist (ids 1); yields the row counts, for checking that none moved."""
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Seeded", 3)
    assert (user_id, event_id) == (1, 1)
    counts = await _counts(db)
    assert counts == {"users": 1, "events": 1, "reservations": 0, "reservation_requests": 0}
    return counts


async def _counts(db: asyncpg.Connection) -> dict[str, int]:
    return {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


def _admin(api: Api) -> dict[str, str]:
    token = api.resources.settings.admin_token
    if token is None or not token.get_secret_value():
        return {}
    return {"Authorization": f"Bearer {token.get_secret_value()}"}


def assert_clear_error(r: httpx.Response, status: int, words: tuple[str, ...]) -> None:
    assert r.status_code == status, f"{r.status_code} {r.text[:300]}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict), body
    assert body.get("statusCode") == status, body
    assert isinstance(body.get("error"), str) and body["error"], body
    message = body.get("message")
    assert isinstance(message, str) and message.strip(), body
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in message {message!r}"


async def assert_nothing_changed(api: Api, db: asyncpg.Connection, before: dict[str, int]) -> None:
    assert await _counts(db) == before
    stats = await api.resources.channel.stats()
    assert (stats.waiting, stats.produced) == (0, 0), stats


@pytest.mark.parametrize(
    "bad",
    MALFORMED + WRONG_TYPES + _id_cases() + ROUTES + STRINGS + DATES + DASHBOARD + EXTRA_FIELDS,
)
async def test_bad_request_is_a_clear_4xx_and_changes_nothing(
    bad: Bad, api: Api, db: asyncpg.Connection, seeded: dict[str, int]
) -> None:
    r = await bad.send(api.client, _admin(api))
    assert_clear_error(r, bad.status, bad.words)
    await assert_nothing_changed(api, db, seeded)


# The edges of the bounds are served: the bounds refuse only what cannot be stored or read back.

EDGE_DATES = [
    ("0001-01-01T00:00:00.000001Z", "0001-01-01T00:00:00.000001Z"),
    ("9999-12-31T23:59:59.999998Z", "9999-12-31T23:59:59.999998Z"),
    ("0001-01-01T00:00:00-14:00", "0001-01-01T14:00:00Z"),
    ("9999-12-31T23:59:59+14:00", "9999-12-31T09:59:59Z"),
    ("2030-05-01T19:00:00+09:00", "2030-05-01T10:00:00Z"),
    ("2030-05-01T19:00:00", "2030-05-01T19:00:00Z"),
    ("2030-05-01", "2030-05-01T00:00:00Z"),
]


@pytest.fixture
def server_in_seoul() -> Iterator[None]:
    """The process's local time zone is Asia/Seoul (UTC+9), as on a server set up in Korea."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Seoul"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.mark.parametrize(("sent", "stored"), EDGE_DATES, ids=[s for s, _ in EDGE_DATES])
async def test_event_dates_within_the_range_are_stored_in_utc(
    sent: str,
    stored: str,
    api: Api,
    db: asyncpg.Connection,
    seeded: dict[str, int],
    server_in_seoul: None,
) -> None:
    # A date without an offset is UTC, not the server's local time (here UTC+9).
    r = await api.client.post(
        "/event", json={**EVENT, "name": "Edge", "date": sent}, headers=_admin(api)
    )
    assert r.status_code == 201, r.text
    event_id = r.json()["id"]
    assert r.json()["date"] == stored
    assert (await api.client.get(f"/event/{event_id}")).json()["date"] == stored
    in_db = await db.fetchval("SELECT date FROM events WHERE id = $1", event_id)
    assert in_db == datetime.fromisoformat(stored), in_db


async def test_pages_up_to_the_offset_bounds_are_served(
    api: Api, db: asyncpg.Connection, seeded: dict[str, int]
) -> None:
    # Two dead letters on a channel of their own, so that a page can be seen to hold them.
    channel = api.resources.queue.channel("bad-input/dead", int, max_attempts=1)
    await channel.produce_many([1, 2])

    async def refuse(n: int) -> None:
        raise ValueError(f"refused {n}")

    consumer = await channel.consume(refuse)
    try:
        await eventually(channel.stats, lambda s: s.dead == 2, what="two dead letters")
    finally:
        await consumer.close()
    url = "/admin/queue/api/dead-letters?channel=bad-input/dead"
    headers = _admin(api)
    everything = (await api.client.get(url, headers=headers)).json()
    assert [d["payload"] for d in everything] == ["1", "2"]
    r = await api.client.get(f"{url}&offset=1&limit=1", headers=headers)
    assert r.status_code == 200, r.text
    assert [d["payload"] for d in r.json()] == ["2"]
    for offset in (2**53 + 1, 2**62, MAX_DEAD_OFFSET):
        r = await api.client.get(f"{url}&offset={offset}&limit=1000", headers=headers)
        assert (r.status_code, r.json()) == (200, []), (offset, r.text)

    # PostgreSQL's OFFSET is a bigint: its largest value is served.
    r = await api.client.get(f"/event/1/reservations?offset={2**63 - 1}&limit=1000")
    assert r.status_code == 200, r.text
    assert r.json() == {"items": [], "total": 0, "limit": 1000, "offset": 2**63 - 1}
    assert await _counts(db) == seeded


# Huge bodies: refused with 413 before they are read.


class Chunks:
    """A streamed request body that counts how much of it the server pulled."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total = total
        self.chunk = chunk
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        while sent < self.total:
            size = min(self.chunk, self.total - sent)
            self.pulled += size
            sent += size
            yield b" " * size


BIG_TARGETS = [
    ("/user", True),
    ("/reservation", True),
    ("/event", True),
    ("/reservation/1/1", False),  # the fast lane: no body expected at all
]


@pytest.mark.parametrize("size", [2 * 1024 * 1024, 20 * 1024 * 1024], ids=["2MB", "20MB"])
@pytest.mark.parametrize(("url", "_reads_body"), BIG_TARGETS, ids=[u for u, _ in BIG_TARGETS])
async def test_huge_body_with_length_is_413_unread(
    url: str, _reads_body: bool, size: int, api: Api, db: asyncpg.Connection, seeded: dict[str, int]
) -> None:
    body = Chunks(size)
    r = await api.client.post(
        url, content=body, headers={**_admin(api), **JSON, "content-length": str(size)}
    )
    assert_clear_error(r, 413, ("larger than", str(MAX_BODY)))
    assert body.pulled == 0, f"the server read {body.pulled} bytes of a body it refused"
    await assert_nothing_changed(api, db, seeded)


@pytest.mark.parametrize("size", [2 * 1024 * 1024, 20 * 1024 * 1024], ids=["2MB", "20MB"])
@pytest.mark.parametrize("url", ["/user", "/reservation", "/event"])
async def test_huge_streamed_body_is_cut_off_at_the_limit(
    url: str, size: int, api: Api, db: asyncpg.Connection, seeded: dict[str, int]
) -> None:
    body = Chunks(size)  # no Content-Length: sent chunked
    r = await api.client.post(url, content=body, headers={**_admin(api), **JSON})
    assert_clear_error(r, 413, ("larger than", str(MAX_BODY)))
    assert body.pulled <= MAX_BODY + body.chunk, f"the server read {body.pulled} bytes"
    await assert_nothing_changed(api, db, seeded)


async def test_body_under_the_limit_is_still_read(
    api: Api, db: asyncpg.Connection, seeded: dict[str, int]
) -> None:
    # Padding whitespace keeps the JSON valid: a body just under the limit is served as usual.
    padding = b" " * (MAX_BODY - 100)
    r = await api.client.post(
        "/user", content=b'{"name": "Ann", "email": "ann@example.com"}' + padding, headers=JSON
    )
    assert r.status_code == 201, r.text
    assert (await _counts(db))["users"] == seeded["users"] + 1


async def test_content_length_that_is_not_a_number_is_400(api: Api) -> None:
    r = await api.client.post("/user", content=b"{}", headers={**JSON, "content-length": "x1"})
    assert_clear_error(r, 400, ("content-length",))
