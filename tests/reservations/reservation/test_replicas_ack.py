"""``REDIS_REPLICAS_ACK``: a reservation request is answered 202 only once a Redis replica holds
it; on a real primary and replica."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from brokerq.server import RedisServer
from reservations.settings import Settings
from reservations.worker import consuming

from ...failover import linked, started_pair
from ..conftest import Api, running_api
from ..helpers import ADMIN_TOKEN, create_event, create_user, eventually


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    with started_pair(tmp_path) as servers:
        yield servers


@pytest.fixture
async def acked_api(
    database_url: str, clean: None, replicated: tuple[RedisServer, RedisServer]
) -> AsyncIterator[Api]:
    primary, replica = replicated
    await linked(replica)
    settings = Settings(
        _env_file=None, ENVIRONMENT="test", DATABASE_URL=database_url, REDIS_URL=primary.url,
        ADMIN_TOKEN=ADMIN_TOKEN, REDIS_REPLICAS_ACK=1,
        # Patient: a replica on a busy machine may take a while; a stopped one never answers.
        REDIS_REPLICAS_ACK_TIMEOUT_MS=2000,
    )  # fmt: skip
    async with running_api(settings) as api:
        yield api


async def test_a_request_no_replica_confirmed_is_answered_503_and_kept(
    acked_api: Api, replicated: tuple[RedisServer, RedisServer]
) -> None:
    api = acked_api
    _, replica = replicated
    event_id = await create_event(api.client, "acked", 10)
    first, second = await create_user(api.client, 1), await create_user(api.client, 2)
    r = await api.client.post(f"/reservation/{event_id}/{first}")
    assert r.status_code == 202, r.text
    assert replica.process is not None
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        r = await api.client.post(f"/reservation/{event_id}/{second}")
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["error"] == "NOT_REPLICATED" and "failover" in body["message"]
    # Queued on the primary all the same: it is processed, and its status URL says so.
    assert body["statusUrl"] == f"/reservation/requests/{body['jobId']}"
    async with consuming(api.resources, max_parallel=4):
        final = await eventually(
            lambda: api.client.get(body["statusUrl"]),
            lambda resp: resp.json().get("status") == "RESERVED",
            what="the unconfirmed request processed",
        )
    assert final.json()["userId"] == second


def test_replicas_ack_is_for_brokerqs_own_layout(database_url: str) -> None:
    with pytest.raises(ValueError, match="REDIS_REPLICAS_ACK"):
        Settings(
            _env_file=None, DATABASE_URL=database_url, REDIS_REPLICAS_ACK=1,
            QUEUE_ENGINE="bullmq",
        )  # fmt: skip
