"""The faults, each a coroutine run in the middle of a burst against a ``Deployment``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from brokerq.server import RedisServer
from reservations.channels import QUEUE_NAME
from reservations.reservation.gate import event_keys
from reservations_tools.loadtest.http import Pool, bearer

from .burst import FaultContext
from .deployment import Deployment, Topology

__all__ = ["SCENARIOS", "Scenario"]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    fault: str
    run: Callable[[Deployment, FaultContext], Awaitable[None]] | None
    appendfsync: str = "always"
    loses_data: bool = False
    """Redis loses accepted requests: the harness asks about every one of them."""
    holds: bool = False
    """The event is sold with holds and a waitlist (``holds.py``), the fault hits as the first
    holds end."""
    topology: Topology = "single"
    """Redis as one server, a Redis Cluster or a Sentinel set."""
    replicas_ack: int = 0
    """``REDIS_REPLICAS_ACK``: a 202 only once this many replicas hold the request; then none
    of the accepted requests may be lost, and the harness asks about every one."""


# Reservations cancelled by the cancellation faults, while Redis cannot confirm their release.
_CANCELS = 10


async def _reserved(ctx: FaultContext, count: int) -> list[int]:
    async with Pool(ctx.base_url, 1) as pool:
        resp = await pool.get(f"/event/{ctx.event_id}/reservations?status=RESERVED&limit={count}")
        if resp.status != 200:
            raise RuntimeError(f"listing reservations answered {resp.status}")
        return [int(item["id"]) for item in resp.json()["items"]]


async def _cancel(ctx: FaultContext, reservation_ids: list[int]) -> None:
    async with Pool(ctx.base_url, len(reservation_ids) or 1) as pool:

        async def cancel(reservation_id: int) -> None:
            resp = await pool.post(
                f"/reservation/{reservation_id}/cancel", None, bearer(ctx.admin_token)
            )
            if resp.status != 200:
                raise RuntimeError(f"cancelling answered {resp.status}: {resp.body[:200]!r}")

        await asyncio.gather(*(cancel(r) for r in reservation_ids))
    ctx.cancelled += len(reservation_ids)


async def _cancel_while_redis_paused(d: Deployment, ctx: FaultContext) -> None:
    ids = await _reserved(ctx, _CANCELS)
    d.pause_redis()
    try:
        await _cancel(ctx, ids)  # each waits for Redis until the API's timeout, then commits
    finally:
        d.resume_redis()


async def _cancel_while_redis_restarts(d: Deployment, ctx: FaultContext) -> None:
    ids = await _reserved(ctx, _CANCELS)
    await d.kill_redis()
    try:
        await _cancel(ctx, ids)
    finally:
        await d.start_redis()


async def _lose_redis_data(d: Deployment, ctx: FaultContext) -> None:
    await d.lose_redis_data()


async def _kill_one_worker(d: Deployment, ctx: FaultContext) -> None:
    d.kill_worker(0)
    await d.start_worker(0)


async def _kill_all_workers(d: Deployment, ctx: FaultContext) -> None:
    for i in range(len(d.workers)):
        d.kill_worker(i)
    for i in range(len(d.workers)):
        await d.start_worker(i)


async def _kill_redis(d: Deployment, ctx: FaultContext) -> None:
    await d.kill_redis()
    await d.start_redis()


async def _restart_postgres(d: Deployment, ctx: FaultContext) -> None:
    await d.stop_postgres()
    await d.start_postgres()


async def _postgres_down_10s(d: Deployment, ctx: FaultContext) -> None:
    await d.stop_postgres()
    await asyncio.sleep(10)  # the fault itself: ten seconds without a database
    await d.start_postgres()


async def _kill_api(d: Deployment, ctx: FaultContext) -> None:
    d.kill_api()
    await d.start_api()


# How long a primary's replica is cut off before the primary is killed: the writes of that
# second are what a takeover can take back (on one machine a replica is otherwise a few
# microseconds behind, and a kill alone would lose next to nothing, by luck rather than design).
_CUT_OFF_S = 1.0


async def _behind_then_killed(d: Deployment, primary: RedisServer, replica: RedisServer) -> None:
    """Cut ``replica`` off ``primary``, let the primary take writes alone, SIGKILL it and let
    the replica go on: it takes over without what it missed."""
    await d.cut_off(replica, primary)
    try:
        await asyncio.sleep(_CUT_OFF_S)  # the fault itself: a second the replica misses
        primary.kill()
    finally:
        d.resume(replica)


async def _kill_cluster_primary(d: Deployment, ctx: FaultContext, key: str) -> None:
    cluster = d.cluster
    assert cluster is not None, "a cluster scenario runs on a Redis Cluster"
    primary = await asyncio.to_thread(cluster.primary_for, key)
    replica = await asyncio.to_thread(cluster.replica_of, primary)
    gate = await asyncio.to_thread(cluster.primary_for, event_keys(ctx.event_id).state)
    queue = await asyncio.to_thread(cluster.primary_for, _QUEUE_TAG)
    ctx.note = "the gate and the queue on " + (
        "the same primary" if gate is queue else "different primaries"
    )
    await _behind_then_killed(d, primary, replica)
    await cluster.wait_failover(replica)
    await primary.start()
    await asyncio.to_thread(cluster.wait_ready_sync, 60)  # back as the replica of its replica


async def _kill_gate_primary(d: Deployment, ctx: FaultContext) -> None:
    await _kill_cluster_primary(d, ctx, event_keys(ctx.event_id).state)


async def _kill_queue_primary(d: Deployment, ctx: FaultContext) -> None:
    await _kill_cluster_primary(d, ctx, _QUEUE_TAG)


async def _kill_sentinel_primary(d: Deployment, ctx: FaultContext) -> None:
    failover = d.sentinel
    assert failover is not None, "a Sentinel scenario runs on a Sentinel set"
    primary = await failover.primary()
    replica = failover.other(primary)
    await _behind_then_killed(d, primary, replica)
    await failover.wait_failover(replica)
    await primary.start()
    await failover.wait_ready()  # the Sentinels made it the replica of its replica


# Every key of the reservation channel has this hash tag: one slot.
_QUEUE_TAG = f"{{{QUEUE_NAME}}}"
_CUT_AND_KILL = f"its replica cut off for {_CUT_OFF_S:g} s, then SIGKILL"
_REJOINS = "the replica takes over; the killed node restarted, it rejoins as replica"


def _failovers() -> list[Scenario]:
    """Each failover with ``REDIS_REPLICAS_ACK=1`` (nothing accepted may be lost) and without
    (``-noack``: what the takeover took back is lost, and counted)."""
    kinds: list[tuple[str, str, Callable[[Deployment, FaultContext], Awaitable[None]], Topology]]
    kinds = [
        (
            "cluster-gate-primary-killed",
            f"Redis Cluster: {_CUT_AND_KILL} the primary of the event's gate slot; {_REJOINS}",
            _kill_gate_primary,
            "cluster",
        ),
        (
            "cluster-queue-primary-killed",
            f"Redis Cluster: {_CUT_AND_KILL} the primary of the reservation queue's slot; "
            + _REJOINS,
            _kill_queue_primary,
            "cluster",
        ),
        (
            "sentinel-primary-killed",
            f"Sentinel: {_CUT_AND_KILL} the primary; {_REJOINS}",
            _kill_sentinel_primary,
            "sentinel",
        ),
    ]
    scenarios = []
    for name, fault, run, topology in kinds:
        scenarios.append(
            Scenario(name, f"{fault} (REDIS_REPLICAS_ACK=1)", run, topology=topology,
                     replicas_ack=1)
        )  # fmt: skip
        scenarios.append(
            Scenario(f"{name}-noack", f"{fault} (no replica acknowledgement)", run,
                     topology=topology, loses_data=True)
        )  # fmt: skip
    return scenarios


SCENARIOS = [
    Scenario("baseline", "none", None),
    Scenario("worker-killed", "SIGKILL one worker, restart it", _kill_one_worker),
    Scenario("all-workers-killed", "SIGKILL all three workers, restart them", _kill_all_workers),
    Scenario(
        "redis-killed-always",
        "SIGKILL Redis (appendfsync always), restart it",
        _kill_redis,
        appendfsync="always",
    ),
    Scenario(
        "redis-killed-everysec",
        "SIGKILL Redis (appendfsync everysec), restart it",
        _kill_redis,
        appendfsync="everysec",
    ),
    Scenario("postgres-restarted", "stop PostgreSQL (fast), start it", _restart_postgres),
    Scenario("postgres-down-10s", "PostgreSQL down for 10 s", _postgres_down_10s),
    Scenario("api-killed", "SIGKILL the API, restart it", _kill_api),
    Scenario(
        "redis-paused-cancels",
        f"SIGSTOP Redis while {_CANCELS} reservations are cancelled, SIGCONT",
        _cancel_while_redis_paused,
    ),
    Scenario(
        "redis-restarted-cancels",
        f"SIGKILL Redis, cancel {_CANCELS} reservations, restart it (appendfsync always)",
        _cancel_while_redis_restarts,
    ),
    Scenario(
        "redis-data-lost",
        "SIGKILL Redis, restart it without its append-only file",
        _lose_redis_data,
        loses_data=True,
    ),
    Scenario("holds-baseline", "none (seats held, a waitlist)", None, holds=True),
    Scenario(
        "holds-worker-killed",
        "seats held: SIGKILL one worker as the first holds end, restart it",
        _kill_one_worker,
        holds=True,
    ),
    Scenario(
        "holds-redis-killed-always",
        "seats held: SIGKILL Redis (appendfsync always) as the first holds end, restart it",
        _kill_redis,
        appendfsync="always",
        holds=True,
    ),
    Scenario(
        "holds-redis-killed-everysec",
        "seats held: SIGKILL Redis (appendfsync everysec) as the first holds end, restart it",
        _kill_redis,
        appendfsync="everysec",
        holds=True,
    ),
    *_failovers(),
]
