"""A pending request's place in its event's line and its estimated wait, over real Redis and
PostgreSQL: requests are queued with no worker running, then settled a few at a time the way a
worker settles them (``process_batch``), or by a real consumer."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from brokerq import RedisConnectionError
from brokerq.redis import open_commands
from reservations.channels import ReserveEvent
from reservations.reservation.gate import (
    AdmissionGate,
    event_keys,
    remember_user,
    settle_rate,
)
from reservations.reservation.settle.batch import Incoming, process_batch
from reservations.reservation.settle.reconcile import reconcile_events
from reservations.reservation.settle.recovery import clear_final_held, requeue_unfinished
from reservations.worker import consuming

from ..conftest import Api
from ..helpers import create_event, create_user, eventually


async def _request(api: Api, event_id: int, user_id: int) -> str:
    r = await api.client.post(f"/reservation/{event_id}/{user_id}")
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


async def _outcome(api: Api, job_id: str) -> dict[str, Any]:
    r = await api.client.get(f"/reservation/requests/{job_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _final(api: Api, job_id: str) -> dict[str, Any]:
    return await eventually(
        lambda: _outcome(api, job_id), lambda b: b["status"] != "PENDING", what=f"{job_id} final"
    )


async def _positions(api: Api, job_ids: list[str]) -> list[int | None]:
    return [(await _outcome(api, job_id))["position"] for job_id in job_ids]


async def _settle(api: Api, job_ids: list[str], gate: AdmissionGate | None = None) -> None:
    """Write the outcomes of these queued requests as a worker would, from their markers."""
    res = api.resources
    ids = await res.request_ids()
    issued = [ids.verify(job_id) for job_id in job_ids]
    markers = await res.gate.pending_many(
        (job_id, i.event_id) for job_id, i in zip(job_ids, issued, strict=True) if i is not None
    )
    batch = []
    for job_id in job_ids:
        p = markers[job_id]
        data = ReserveEvent(
            userId=p.user_id, eventId=p.event_id, requestId=p.request_id,
            admission=p.admission, seq=p.seq, acceptedAtMs=p.accepted_at_ms,
        )  # fmt: skip
        batch.append(Incoming(f"m-{job_id}", data))
    await process_batch(res.session_factory, gate or res.gate, batch)


async def _users(api: Api, count: int) -> list[int]:
    return [await create_user(api.client, n) for n in range(count)]


async def test_pending_requests_show_their_place_in_their_events_line(api: Api) -> None:
    users = await _users(api, 4)
    concert = await create_event(api.client, "Concert", 2)
    play = await create_event(api.client, "Play", 5)
    # Interleaved with another event's requests: each event has its own line.
    jobs, plays = [], []
    for user_id in users:
        jobs.append(await _request(api, concert, user_id))
        plays.append(await _request(api, play, user_id))
    bodies = [await _outcome(api, job_id) for job_id in jobs]
    assert [b["status"] for b in bodies] == ["PENDING"] * 4
    # The last two are rejected at the gate (sold out) and wait to be settled like the others.
    assert [b["position"] for b in bodies] == [1, 2, 3, 4]
    assert await _positions(api, plays) == [1, 2, 3, 4]
    # Nothing settled yet: no pace to estimate a wait from.
    assert {b["estimatedWaitSeconds"] for b in bodies} == {None}

    opera = await create_event(api.client, "Opera", 1)
    alone = await _outcome(api, await _request(api, opera, users[3]))
    assert (alone["position"], alone["estimatedWaitSeconds"]) == (1, None)


async def test_positions_move_up_as_requests_are_settled(api: Api) -> None:
    users = await _users(api, 6)
    event_id = await create_event(api.client, "Concert", 3)
    jobs = [await _request(api, event_id, user_id) for user_id in users]

    # Two batches: the first starts the event's clock, the second gives it a pace.
    await _settle(api, jobs[:1])
    assert await _positions(api, jobs) == [None, 1, 2, 3, 4, 5]
    await _settle(api, jobs[1:3])
    bodies = [await _outcome(api, job_id) for job_id in jobs]
    assert [b["status"] for b in bodies] == ["RESERVED"] * 3 + ["PENDING"] * 3
    assert [b["position"] for b in bodies] == [None, None, None, 1, 2, 3]
    waits = [b["estimatedWaitSeconds"] for b in bodies]
    assert waits[:3] == [None, None, None]
    assert 0 < waits[3] < waits[4] < waits[5], waits

    async with consuming(api.resources, max_parallel=8):
        final = [await _final(api, job_id) for job_id in jobs[3:]]
        # The line goes with the last marker, just after the last outcome is committed.
        line = event_keys(event_id).line
        await eventually(lambda: api.resources.redis.call("EXISTS", line), lambda n: n == 0)
    assert [b["reason"] for b in final] == ["SOLD_OUT"] * 3
    assert {(b["position"], b["estimatedWaitSeconds"]) for b in final} == {(None, None)}


async def test_undo_gives_up_the_place_in_line(api: Api) -> None:
    """A request whose message could not be queued was never accepted: it leaves the line."""
    users = await _users(api, 3)
    event_id = await create_event(api.client, "Concert", 5)
    gate = api.resources.gate
    signer = await api.resources.request_ids()
    ids = [signer.new(event_id=event_id, user_id=u, accepted_at_ms=1) for u in users]
    for user_id in users:
        await remember_user(gate.redis, user_id)
    for n, user_id in enumerate(users):
        result = await gate.admit(
            event_id=event_id, user_id=user_id, request_id=ids[n], accepted_at_ms=1
        )
        assert result.seq == n + 1
    assert await _positions(api, ids) == [1, 2, 3]
    await gate.undo(event_id=event_id, user_id=users[1], request_id=ids[1])
    assert await _positions(api, [ids[0], ids[2]]) == [1, 2]
    assert await gate.pending(event_id, ids[1]) is None


async def test_recovery_clears_the_place_of_a_request_its_worker_left_behind(
    api: Api, tmp_path: Path
) -> None:
    """A worker that committed an outcome and died before clearing up leaves the request in its
    line; the maintenance pass's recovery finds it final and takes it out."""
    users = await _users(api, 3)
    event_id = await create_event(api.client, "Concert", 5)
    jobs = [await _request(api, event_id, user_id) for user_id in users]
    # The commit succeeds, then Redis is out of reach before the gate hears of it.
    unreachable = AdmissionGate(open_commands(f"unix://{tmp_path / 'no-redis.sock'}"))
    with pytest.raises(RedisConnectionError):
        await _settle(api, jobs[:1], gate=unreachable)
    assert (await _outcome(api, jobs[0]))["status"] == "RESERVED"
    assert await _positions(api, jobs[1:]) == [2, 3]

    res = api.resources
    requeued = await requeue_unfinished(res.gate, res.channel, res.session_factory, older_than_ms=0)
    assert requeued == 2  # the two still pending (nothing consumes them here)
    assert await _positions(api, jobs[1:]) == [1, 2]


async def test_places_left_by_markers_gone_are_pruned(api: Api) -> None:
    """A marker that expired or was evicted leaves its place behind, counted ahead of every later
    request; the maintenance pass takes it out."""
    users = await _users(api, 3)
    event_id = await create_event(api.client, "Concert", 5)
    jobs = [await _request(api, event_id, user_id) for user_id in users]
    res = api.resources
    # As Redis evicts a key with a TTL:
    await res.redis.call("DEL", event_keys(event_id).marker(jobs[0]))
    assert await _positions(api, jobs[1:]) == [2, 3]
    report = await reconcile_events(res.gate, res.session_factory)
    assert report.pruned == 1
    assert await _positions(api, jobs[1:]) == [1, 2]
    assert (await reconcile_events(res.gate, res.session_factory)).pruned == 0


def test_the_settle_rate_falls_while_nothing_is_settled_and_expires() -> None:
    # 200 settled over 10 s of waiting: 20 per second, as of the last settle.
    at = 1_000_000.0
    assert settle_rate(settled=200, span_s=10, at_ms=at, from_ms=None, now_ms=at) == 20
    # Requests waiting since then, none settled: the pace falls with the time.
    later = [
        settle_rate(settled=200, span_s=10, at_ms=at, from_ms=at, now_ms=at + s * 1000)
        for s in (0, 1, 5, 30)
    ]
    assert later[0] == 20
    rates = [r for r in later if r is not None]
    assert len(rates) == 4 and all(a > b for a, b in itertools.pairwise(rates)), later
    # None waiting: the last pace holds, until it is too old to say anything.
    assert settle_rate(settled=200, span_s=10, at_ms=at, from_ms=None, now_ms=at + 30_000) == 20
    assert settle_rate(settled=200, span_s=10, at_ms=at, from_ms=None, now_ms=at + 61_000) is None
    # One batch over a few milliseconds is not taken for thousands per second.
    assert settle_rate(settled=50, span_s=0.005, at_ms=at, from_ms=None, now_ms=at) == 50


async def test_clearing_up_after_a_held_request_keeps_its_seat(api: Api, tmp_path: Path) -> None:
    """A worker that committed a hold and died before clearing up leaves the request unfinished
    in the gate; the maintenance pass finishes it there but leaves the seat to the hold."""
    users = await _users(api, 2)
    event_id = await create_event(api.client, "Held", 1, holdSeconds=60)
    job = await _request(api, event_id, users[0])
    unreachable = AdmissionGate(open_commands(f"unix://{tmp_path / 'no-redis.sock'}"))
    with pytest.raises(RedisConnectionError):
        await _settle(api, [job], gate=unreachable)
    assert (await _outcome(api, job))["status"] == "HELD"

    res = api.resources
    assert await clear_final_held(res.gate, res.session_factory) == 1
    assert await res.gate.pending(event_id, job) is None
    assert await res.gate.holders(event_id) == {users[0]: job}
    late = await _request(api, event_id, users[1])
    markers = await res.gate.pending(event_id, late)
    assert markers is not None and markers.admission.value == "SOLD_OUT"
