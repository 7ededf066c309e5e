"""The admission gate learns an event once: at creation, or with one load per process."""

from __future__ import annotations

import asyncio

import pytest

from reservations.reservation.gate import EventSnapshot

from ..conftest import Api
from ..helpers import create_event, create_user

SNAPSHOT = EventSnapshot(capacity=7, holders={}, last_seq=0, accepted=0)


async def test_a_created_event_is_known_to_the_gate_at_once(api: Api) -> None:
    event_id = await create_event(api.client, "Drop", 42)
    counters = await api.resources.gate.counters(event_id)
    assert counters is not None
    assert (counters.capacity, counters.admitted, counters.accepted) == (42, 0, 0)


async def test_concurrent_first_requests_share_one_snapshot_load(api: Api) -> None:
    gate = api.resources.gate
    loads = 0
    release = asyncio.Event()

    async def load() -> EventSnapshot:
        nonlocal loads
        loads += 1
        await release.wait()
        return SNAPSHOT

    waiters = [asyncio.ensure_future(gate.seed_once(999, load)) for _ in range(50)]
    # One turn of the loop: each waiter, in order, reaches the gate before the load is released.
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiters) == [True] * 50
    assert loads == 1
    counters = await gate.counters(999)
    assert counters is not None and counters.capacity == 7
    # Once done, a later caller loads again (the gate state may have been lost meanwhile).
    await gate.forget_event(999)
    assert await gate.seed_once(999, load)
    assert loads == 2


async def test_when_the_shared_load_fails_the_others_load_their_own(api: Api) -> None:
    gate = api.resources.gate
    calls = 0
    release = asyncio.Event()

    async def load() -> EventSnapshot | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()
            raise ConnectionError("database went away")
        return SNAPSHOT

    first = asyncio.ensure_future(gate.seed_once(998, load))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(gate.seed_once(998, load))
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(ConnectionError):
        await first
    assert await second is True
    assert calls == 2


async def test_an_unknown_event_is_still_a_404(api: Api) -> None:
    user_id = await create_user(api.client, 1)
    r = await api.client.post(f"/reservation/4242/{user_id}")
    assert r.status_code == 404, r.text
    assert r.json()["message"] == "event 4242 does not exist"


async def test_a_reservation_after_the_gate_lost_the_event_reloads_it(api: Api) -> None:
    event_id = await create_event(api.client, "Lost", 3)
    users = [await create_user(api.client, n) for n in range(5)]
    await api.resources.gate.forget_event(event_id)
    answers = await asyncio.gather(
        *(api.client.post(f"/reservation/{event_id}/{u}") for u in users)
    )
    assert [a.status_code for a in answers] == [202] * 5
    counters = await api.resources.gate.counters(event_id)
    assert counters is not None
    assert (counters.capacity, counters.admitted, counters.accepted) == (3, 3, 5)
