"""The service on Redis Sentinel (``REDIS_URL=redis+sentinel://...``): it follows the primary
through a failover and serves every request accepted before it (once the replica held them:
``REDIS_REPLICAS_ACK``, tested on its own in ``test_replicas_ack.py``, makes that so for every
202; here the test waits for the replica itself, since the promoted replica has no replica left
to wait for)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from reservations.settings import Settings
from reservations.worker import consuming

from ...failover import FailoverSet, sentinels_ready, started_failover_set
from ..conftest import Api, running_api
from ..helpers import ADMIN_TOKEN, create_event, create_user, eventually, outcomes


@pytest.fixture
def failover_set(tmp_path: Path) -> Iterator[FailoverSet]:
    with started_failover_set(tmp_path) as found:
        yield found


@pytest.fixture
async def sentinel_api(
    database_url: str, clean: None, failover_set: FailoverSet
) -> AsyncIterator[Api]:
    await sentinels_ready(failover_set)
    settings = Settings(
        _env_file=None, ENVIRONMENT="test", DATABASE_URL=database_url,
        REDIS_URL=failover_set.url, ADMIN_TOKEN=ADMIN_TOKEN,
    )  # fmt: skip
    async with running_api(settings) as api:
        yield api


async def test_requests_accepted_before_a_failover_are_all_served(
    sentinel_api: Api, failover_set: FailoverSet
) -> None:
    api = sentinel_api
    event_id = await create_event(api.client, "sentinel", 5)
    users = [await create_user(api.client, n) for n in range(8)]
    accepted: list[str] = []
    for user_id in users[:4]:
        r = await api.client.post(f"/reservation/{event_id}/{user_id}")
        assert r.status_code == 202, r.text
        accepted.append(r.json()["id"])
    # Everything written so far is on the replica before the primary dies.
    assert await api.resources.redis.call("WAIT", 1, 5000) == 1
    failover_set.primary.kill()
    deadline = time.monotonic() + 30
    for user_id in users[4:]:
        while True:
            r = await api.client.post(f"/reservation/{event_id}/{user_id}")
            if r.status_code == 202:
                accepted.append(r.json()["id"])
                break
            # 503 while there is no primary: what a client sees, and it tries again.
            assert r.status_code == 503, r.text
            assert time.monotonic() < deadline, "no failover within 30 s"
            await asyncio.sleep(0.05)  # a client's pause before it tries again

    async def final(job_id: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any]:
            body: dict[str, Any] = (await api.client.get(f"/reservation/requests/{job_id}")).json()
            return body

        return await eventually(probe, lambda b: b.get("status") not in (None, "PENDING"))

    async with consuming(api.resources, max_parallel=4):
        states = [(await final(job_id))["status"] for job_id in accepted]
    assert states.count("RESERVED") == 5 and states.count("REJECTED") == 3, states
    counts = await outcomes(api.client, event_id)
    assert (counts["accepted"], counts["lost"], counts["reserved"]) == (8, 0, 5)
