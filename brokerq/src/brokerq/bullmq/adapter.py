"""brokerq on BullMQ's Redis data layout: a channel is a BullMQ queue, a message is a job.

Every state change runs BullMQ's own Lua script (bundled by the PyPI ``bullmq`` package), so
Node BullMQ workers, queues and Bull Board see exactly what they would have written
themselves. What makes it fast is the loop around the scripts (``batch.py``): one consumer step
(its acknowledgements, retries, releases, the stalled-jobs check and up to ``fetch`` job
fetches) is one ``EVALSHA``, and so are the produces of one event-loop tick.

Mapping (see docs/bullmq.md): message id = job id; payload = the job's ``data`` JSON;
tries = ``attemptsMade + 1``; lease = the job lock (token = consumer id, renewed with
``extendLocks``); dead letters = the ``failed`` set; redrive = retry failed jobs.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]

from ..adapter import Delivery, Exchange, Outgoing, RawDeadLetter, Settlement
from ..errors import ConfigError, ScriptError
from ..messages import ChannelStats
from ..options import PRIORITY_MAX, check_channel_name
from ..redis.commands import commands_for
from ..redis.lua import Script
from . import scripts
from .batch import BATCH

__all__ = ["BullMQAdapter", "KeepJobs", "bullmq_priority"]

KeepJobs = bool | int | Mapping[str, int]
"""BullMQ's ``removeOnComplete`` / ``removeOnFail``: True (remove), False (keep all), a count
to keep, or ``{"age": seconds, "count": n}``."""

# Blocking waits stay well under the socket timeout of a redis-py client given to the adapter.
MAX_BLOCK_MS = 1000
METRICS_DATA_POINTS = 60 * 24 * 7  # BullMQ's MetricsTime.ONE_WEEK, one point per minute
# BullMQ's long option names stored under short keys in the job hash (its optsEncodeMap).
OPTS_ENCODE = {
    "deduplication": "de",
    "failParentOnFailure": "fpof",
    "continueParentOnFailure": "cpof",
    "ignoreDependencyOnFailure": "idof",
    "keepLogs": "kl",
    "removeDependencyOnFailure": "rdof",
}
CONTENT_DEDUP_PREFIX = "brokerq:"
LOST_CODES = {-1, -2, -3, -6}  # missing job, missing lock, not active, lock of another token


def bullmq_priority(priority: int) -> int:
    """brokerq priority (higher first, [-1000, 1000], 0 default) -> BullMQ priority.

    0 stays 0 (BullMQ's "no priority": the plain ``wait`` list, served before every prioritized
    job); any other p becomes ``1001 - p`` (1 for 1000 ... 2001 for -1000: lower is first)."""
    return 0 if priority == 0 else PRIORITY_MAX + 1 - priority


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _keep_jobs(value: Any) -> dict[str, Any]:
    """BullMQ's getKeepJobs: what moveToFinished keeps of a finished job."""
    if isinstance(value, bool) or value is None:
        return {"count": 0 if value else -1}
    if isinstance(value, int):
        return {"count": value}
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(f"removeOnComplete / removeOnFail must be bool, int or dict, not {value!r}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Keys:
    __slots__ = ("active", "base", "completed", "delayed", "events", "failed", "id", "limiter",
                 "marker", "meta", "metrics_completed", "metrics_failed", "paused", "pc",
                 "prioritized", "repeat", "stalled", "stalled_check", "stats", "wait")  # fmt: skip

    def __init__(self, prefix: str, queue: str) -> None:
        check_channel_name(queue)
        if ":" in queue:
            raise ConfigError(f"a BullMQ queue name has no ':', got {queue!r}")
        self.base = f"{prefix}:{queue}:"
        b = self.base
        self.wait, self.paused, self.meta, self.id = b + "wait", b + "paused", b + "meta", b + "id"
        self.completed, self.failed, self.delayed = b + "completed", b + "failed", b + "delayed"
        self.active, self.events, self.marker = b + "active", b + "events", b + "marker"
        self.prioritized, self.pc, self.stalled = b + "prioritized", b + "pc", b + "stalled"
        self.stalled_check, self.limiter, self.repeat = (
            b + "stalled-check",
            b + "limiter",
            b + "repeat",
        )
        self.metrics_completed = b + "metrics:completed"
        self.metrics_failed = b + "metrics:failed"
        # brokerq's own counters BullMQ has no place for (retries, stalled jobs moved back).
        self.stats = b + "brokerq:stats"

    def job(self, job_id: str) -> str:
        return self.base + job_id


class _Batch:
    """Operations for one call of the batch script (see batch.py)."""

    __slots__ = ("_index", "base", "blobs", "now", "ops")

    def __init__(self, base: str, now: int) -> None:
        self.base = base
        self.now = now
        self.blobs: list[bytes] = []
        self.ops: list[Any] = []
        self._index: dict[bytes, int] = {}

    def blob(self, value: Any) -> int:
        """Index of ``value`` (msgpacked) among the shared blobs; equal values share one."""
        data: bytes = msgpack.packb(value, use_bin_type=True)
        index = self._index.get(data)
        if index is None:
            self.blobs.append(data)
            index = self._index[data] = len(self.blobs)
        return index

    def op(self, *args: Any) -> None:
        self.ops.extend(args)


@dataclass(slots=True)
class _Held:
    """What the adapter remembers of a job it handed to a consumer, to settle it like Node."""

    attempts: int | None
    attempts_made: int
    backoff: Any
    remove_on_complete: Any
    remove_on_fail: Any
    lifo: bool


@dataclass(slots=True)
class _Queue:
    keys: _Keys
    next_stalled_check_ms: int = 0


class BullMQAdapter:
    """brokerq channels as BullMQ queues, compatible with Node BullMQ workers and producers.

    ``BullMQAdapter("redis://host:6379/0", prefix="bull", job_name="reserveEvent")``;
    ``job_names={"reservation-queue": "reserveEvent"}`` names the jobs of individual channels.
    ``job_options`` are BullMQ job options added to every job we produce (per channel via
    ``channel_job_options``), like Node's ``Queue`` ``defaultJobOptions``; per message, pass
    ``options=`` to ``produce``. ``remove_on_complete`` / ``remove_on_fail`` apply to jobs
    that carry no such option, like the Node ``Worker`` options of those names.
    ``stalled_interval_ms`` (default: the channel's lease) and ``max_stalled_count`` (default
    1) are the Node ``Worker`` options. ``worker_name`` is recorded as the job's processedBy.

    Redis Cluster (a ``redis+cluster://`` URL, ``cluster=True`` or a redis-py ``RedisCluster``
    client): every key of a queue must share one slot, so, as BullMQ advises, the key prefix
    holds a hash tag: ``prefix="{bull}"``, the default there (Node's queues then take
    ``prefix: '{bull}'``); a prefix without one is refused with a ``ConfigError``. All queues of
    one prefix live on one node: give groups of queues prefixes of their own to spread them.
    """

    accepts_options = True

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        cluster: bool = False,
        prefix: str | None = None,
        job_name: str = "default",
        job_names: Mapping[str, str] | None = None,
        job_options: Mapping[str, Any] | None = None,
        channel_job_options: Mapping[str, Mapping[str, Any]] | None = None,
        remove_on_complete: KeepJobs = False,
        remove_on_fail: KeepJobs = False,
        stalled_interval_ms: int | None = None,
        max_stalled_count: int = 1,
        worker_name: str | None = None,
        password: str | None = None,
        **options: Any,
    ) -> None:
        self._redis = commands_for(
            url, client=client, cluster=cluster, password=password, options=options
        )
        if prefix is None:
            prefix = "{bull}" if self._redis.is_cluster else "bull"
        elif self._redis.is_cluster and not _hash_tag(prefix):
            raise ConfigError(
                f"on Redis Cluster every key of a BullMQ queue must share one slot: the prefix "
                f"{prefix!r} holds no hash tag; use one such as '{{bull}}' (BullMQ's advice for "
                "Cluster, and the default there)"
            )
        self.prefix = prefix
        self.job_name = job_name
        self.job_names = dict(job_names or {})
        self.job_options = dict(job_options or {})
        self.channel_job_options = {k: dict(v) for k, v in (channel_job_options or {}).items()}
        self.remove_on_complete = remove_on_complete
        self.remove_on_fail = remove_on_fail
        _keep_jobs(remove_on_complete)  # refuse a wrong value now, not at the first ack
        _keep_jobs(remove_on_fail)
        self.stalled_interval_ms = stalled_interval_ms
        self.max_stalled_count = max_stalled_count
        self.worker_name = worker_name
        self._queues: dict[str, _Queue] = {}
        self._held: dict[tuple[str, str], _Held] = {}
        self._loaded = False

    def _q(self, channel: str) -> _Queue:
        q = self._queues.get(channel)
        if q is None:
            q = self._queues[channel] = _Queue(_Keys(self.prefix, channel))
        return q

    # -- running scripts -----------------------------------------------------------------------

    async def _pipeline(self, calls: Sequence[tuple[Script, list[Any], list[Any]]]) -> list[Any]:
        """Run script calls together, in flight at once."""
        if not calls:
            return []
        if not self._loaded and not self._redis.is_cluster:
            # Cached up front, so that many calls at once do not each send their script whole.
            # (A cluster's nodes each learn a script from its first EVAL instead: SCRIPT LOAD
            # has no key to take it to a node.)
            await self._redis.call_many(("SCRIPT", "LOAD", s.text) for s in scripts.SCRIPTS)
            self._loaded = True
        if len(calls) == 1:
            script, keys, args = calls[0]
            return [await script.run(self._redis, keys, args)]
        replies = await asyncio.gather(
            *(script.run(self._redis, keys, args) for script, keys, args in calls),
            return_exceptions=True,
        )
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    # -- producing -----------------------------------------------------------------------------

    def _job_opts(self, channel: str, item: Outgoing) -> tuple[dict[str, Any], str]:
        opts: dict[str, Any] = {**self.job_options, **self.channel_job_options.get(channel, {})}
        if item.delay_ms > 0:
            opts["delay"] = item.delay_ms
        if item.priority:
            opts["priority"] = bullmq_priority(item.priority)
        if item.dedup_key is not None:
            kind, _, key = item.dedup_key.partition(":")
            dedup_id = key if kind == "k" else CONTENT_DEDUP_PREFIX + key
            opts["deduplication"] = {"id": dedup_id, "ttl": item.dedup_ms}
        if item.headers is not None:
            # BullMQ's telemetry metadata: the trace propagation carrier as a JSON string.
            opts["tm"] = item.headers.decode()
        if item.options:
            opts.update(item.options)
        custom_id = opts.get("jobId")
        return opts, "" if custom_id is None else str(custom_id)

    async def produce(self, channel: str, items: Sequence[Outgoing]) -> list[tuple[str, bool]]:
        k = self._q(channel).keys
        name = self.job_names.get(channel, self.job_name)
        now = _now_ms()
        batch = _Batch(k.base, now)
        for item in items:
            opts, custom_id = self._job_opts(channel, item)
            de = opts.get("deduplication")
            dedup_key = f"{k.base}de:{de['id']}" if isinstance(de, Mapping) else None
            encoded = _encode_opts(opts)
            delay = opts.get("delay")
            if isinstance(delay, int | float) and delay > 0:
                kind = "d"
            elif opts.get("priority"):
                kind = "p"
            else:
                kind = "s"
            args = msgpack.packb(
                [k.base, custom_id, name, now, None, None, None, None, dedup_key],
                use_bin_type=True,
            )
            batch.op("P", kind, args, item.payload, batch.blob(encoded), custom_id)
        results = []
        for job_id, deduplicated in await self._run_batch(batch):
            if isinstance(job_id, int):
                raise ScriptError(f"BullMQ add of a job to {channel!r} failed: code {job_id}")
            results.append((_text(job_id), bool(deduplicated)))
        return results

    async def _run_batch(self, batch: _Batch) -> list[Any]:
        if not batch.ops:
            return []
        args = [batch.base, batch.now, len(batch.blobs), *batch.blobs, *batch.ops]
        # The script builds its keys from the queue's prefix; one of them, as a key, takes the
        # call to the queue's node on Redis Cluster (the script itself ignores it).
        result: list[Any] = await BATCH.run(self._redis, (batch.base + "meta",), args)
        return result

    # -- consuming -----------------------------------------------------------------------------

    def _finish_opts(
        self, consumer: str, held: _Held, target: str, attempts: int, lease_ms: int
    ) -> dict[str, Any]:
        """moveToFinished's options, as Node's worker builds them."""
        if target == "completed":
            own = held.remove_on_complete
            keep = _keep_jobs(self.remove_on_complete if own is None else own)
        else:
            own = held.remove_on_fail
            keep = _keep_jobs(self.remove_on_fail if own is None else own)
        opts = {
            "token": consumer, "keepJobs": keep, "limiter": None, "lockDuration": lease_ms,
            "attempts": attempts, "attemptsMade": held.attempts_made,
            "maxMetricsSize": METRICS_DATA_POINTS, "fpof": False, "cpof": False, "idof": False,
            "rdof": False,
        }  # fmt: skip
        if self.worker_name:
            opts["name"] = self.worker_name
        return opts

    async def _recall(self, channel: str, k: _Keys, ids: Sequence[str]) -> None:
        """Job options of held jobs this adapter did not fetch itself (another process's)."""
        missing = [i for i in ids if (channel, i) not in self._held]
        if not missing:
            return
        replies = await self._redis.call_many(
            ("HMGET", k.job(job_id), "opts", "atm") for job_id in missing
        )
        for job_id, (opts, atm) in zip(missing, replies, strict=True):
            self._held[(channel, job_id)] = _held_from(json.loads(opts) if opts else {}, atm)

    def _fail(
        self, batch: _Batch, job_id: str, error: str, consumer: str, held: _Held,
        attempts: int, lease_ms: int,
    ) -> None:  # fmt: skip
        opts = self._finish_opts(consumer, held, "failed", attempts, lease_ms)
        fields = batch.blob(["failedReason", error, "stacktrace", json.dumps([error])])
        batch.op("F", job_id, "failed", error, batch.blob(opts), fields)

    async def exchange(
        self,
        channel: str,
        consumer: str,
        settle: Settlement,
        fetch: int,
        lease_ms: int,
        max_attempts: int,
    ) -> Exchange:
        q = self._q(channel)
        k = q.keys
        now = _now_ms()
        await self._recall(
            channel,
            k,
            [*settle.acks, *(r[0] for r in settle.retries), *(d[0] for d in settle.dead)],
        )
        batch = _Batch(k.base, now)
        settled: list[tuple[str, bool]] = []  # (job id, retried)
        for job_id in settle.acks:
            held = self._held.pop((channel, job_id))
            opts = self._finish_opts(
                consumer, held, "completed", held.attempts or max_attempts, lease_ms
            )
            batch.op("F", job_id, "completed", "null", batch.blob(opts), 0)
            settled.append((job_id, False))
        for job_id, delay_ms, error in settle.retries:
            # What Node's Job.moveToFailed does: retry after the backoff, or fail for good.
            held = self._held.pop((channel, job_id))
            attempts = held.attempts or max_attempts
            if held.attempts_made + 1 >= attempts:
                self._fail(batch, job_id, error, consumer, held, attempts, lease_ms)
                settled.append((job_id, False))
                continue
            if held.backoff is not None:
                delay_ms = _backoff_ms(held.backoff, held.attempts_made + 1)
            fields = batch.blob(["failedReason", error, "stacktrace", json.dumps([error])])
            if delay_ms > 0:
                batch.op("D", job_id, consumer, delay_ms, fields)
            else:
                batch.op("R", job_id, consumer, "RPUSH" if held.lifo else "LPUSH", fields)
            settled.append((job_id, True))
        for job_id, reason in settle.dead:
            held = self._held.pop((channel, job_id))
            self._fail(batch, job_id, reason, consumer, held, held.attempts or max_attempts,
                       lease_ms)  # fmt: skip
            settled.append((job_id, False))
        for job_id in settle.releases:
            self._held.pop((channel, job_id), None)
            batch.op("W", job_id, consumer)
            settled.append((job_id, False))
        interval = self.stalled_interval_ms or lease_ms
        check_stalled = now >= q.next_stalled_check_ms
        if check_stalled:
            q.next_stalled_check_ms = now + interval
            batch.op("S", self.max_stalled_count, interval)
        if fetch > 0:
            opts = {"token": consumer, "lockDuration": lease_ms, "limiter": None}
            if self.worker_name:
                opts["name"] = self.worker_name
            batch.op("A", fetch, batch.blob(opts))
        replies = await self._run_batch(batch)

        lost = []
        retried = 0
        for (job_id, is_retry), reply in zip(settled, replies, strict=False):
            if isinstance(reply, int) and reply in LOST_CODES:
                lost.append(job_id)
            elif is_retry:
                retried += 1
        rest = replies[len(settled) :]
        redelivered = len(rest.pop(0)) if check_stalled else 0
        if retried or redelivered:
            await self._redis.call_many(
                [("HINCRBY", k.stats, "retried", retried),
                 ("HINCRBY", k.stats, "redelivered", redelivered)]
            )  # fmt: skip
        deliveries: list[Delivery] = []
        deferred: list[tuple[str, str, _Held]] = []
        hint = -1
        if fetch > 0:
            jobs, (_, _, limit_ms, next_delayed) = rest[0]
            for raw, job_id, _, _ in jobs:
                job = {_text(raw[i]): raw[i + 1] for i in range(0, len(raw), 2)}
                jid = _text(job_id)
                opts = json.loads(job["opts"]) if job.get("opts") else {}
                held = _held_from(opts, job.get("atm"))
                if "defa" in job:  # stalled too often: Node fails it when it next fetches
                    deferred.append((jid, _text(job["defa"]), held))
                    continue
                self._held[(channel, jid)] = held
                produced = int(job.get("timestamp") or 0) or None
                deliveries.append(Delivery(jid, job.get("data") or b"{}", held.attempts_made + 1,
                                           produced, _headers(opts.get("tm"))))  # fmt: skip
            if limit_ms and int(limit_ms) > 0:
                hint = _min_hint(hint, int(limit_ms))
            if next_delayed and int(next_delayed) > 0:
                hint = _min_hint(hint, max(1, int(next_delayed) - now))
        if deferred:
            again = _Batch(k.base, now)
            for jid, reason, held in deferred:
                self._fail(again, jid, reason, consumer, held, held.attempts or max_attempts,
                           lease_ms)  # fmt: skip
            await self._run_batch(again)
        hint = _min_hint(hint, max(1, q.next_stalled_check_ms - now))
        return Exchange(deliveries, lost, hint)

    async def renew(
        self, channel: str, consumer: str, ids: Sequence[str], lease_ms: int
    ) -> list[str]:
        if not ids:
            return []
        k = self._q(channel).keys
        args = [
            k.base,
            msgpack.packb([consumer] * len(ids), use_bin_type=True),
            msgpack.packb(list(ids), use_bin_type=True),
            lease_ms,
        ]
        [failed] = await self._pipeline([(scripts.EXTEND_LOCKS, [k.stalled], args)])
        return [_text(x) for x in failed]

    async def wait(self, channel: str, timeout_ms: int) -> None:
        seconds = min(max(timeout_ms, 1), MAX_BLOCK_MS) / 1000
        await self._redis.block(seconds, "BZPOPMIN", self._q(channel).keys.marker, seconds)

    # -- inspecting ----------------------------------------------------------------------------

    async def stats(self, channel: str) -> ChannelStats:
        k = self._q(channel).keys
        replies = await self._redis.call_many(
            [("LLEN", k.wait), ("ZCARD", k.prioritized), ("LLEN", k.paused), ("LLEN", k.active),
             ("ZCARD", k.delayed), ("ZCARD", k.failed), ("HGET", k.metrics_completed, "count"),
             ("HGET", k.metrics_failed, "count"), ("GET", k.id), ("LINDEX", k.wait, -1),
             ("ZRANGE", k.prioritized, 0, 0), ("HMGET", k.stats, "retried", "redelivered")],
            # One snapshot on a single server. redis-py 8.1's cluster transactions leave a
            # connection its close cannot shut: on Cluster the counts are read back to back.
            transaction=not self._redis.is_cluster,
        )  # fmt: skip
        wait, prio, paused, active, delayed, failed, done, dead, produced = replies[:9]
        head, phead, own = replies[9:]
        head_id = head or (phead[0] if phead else None)
        lag = 0
        if head_id:
            ts = await self._redis.call("HGET", k.job(_text(head_id)), "timestamp")
            lag = max(0, _now_ms() - int(ts)) if ts else 0
        return ChannelStats(
            channel=channel,
            waiting=wait + prio + paused,
            in_flight=active,
            delayed=delayed,
            dead=failed,
            produced=int(produced or 0),
            processed=int(done or 0),
            retried=int(own[0] or 0),
            redelivered=int(own[1] or 0),
            dead_lettered=int(dead or 0),
            lag_ms=lag,
        )

    async def dead_letters(self, channel: str, offset: int, limit: int) -> list[RawDeadLetter]:
        k = self._q(channel).keys
        flat = await self._redis.call("ZRANGE", k.failed, offset, offset + limit - 1, "WITHSCORES")
        entries = list(zip(flat[::2], flat[1::2], strict=True))
        if not entries:
            return []
        replies = await self._redis.call_many(
            ("HMGET", k.job(_text(job_id)), "data", "failedReason", "atm", "timestamp")
            for job_id, _ in entries
        )
        letters = []
        for (job_id, score), (data, reason, atm, ts) in zip(entries, replies, strict=True):
            letters.append(
                RawDeadLetter(
                    id=_text(job_id),
                    payload=data or b"",
                    error=_text(reason or b""),
                    tries=int(atm or 0),
                    dead_at_ms=int(float(score)),
                    produced_at_ms=int(ts or 0),
                )
            )
        return letters

    async def _failed_ids(self, k: _Keys, ids: Sequence[str] | None) -> list[str]:
        if ids is not None:
            return list(ids)
        return [_text(x) for x in await self._redis.call("ZRANGE", k.failed, 0, -1)]

    async def redrive(self, channel: str, ids: Sequence[str] | None) -> int:
        """Like Node's ``job.retry("failed", {resetAttemptsMade: true})`` for each."""
        k = self._q(channel).keys
        chosen = await self._failed_ids(k, ids)
        calls: list[tuple[Script, list[Any], list[Any]]] = []
        for job_id in chosen:
            keys = [k.job(job_id), k.events, k.failed, k.wait, k.meta, k.active, k.marker,
                    k.prioritized, k.pc]  # fmt: skip
            calls.append(
                (scripts.REPROCESS_JOB, keys, [job_id, "LPUSH", "failedReason", "failed", "1", "1"])
            )
        total = 0
        for start in range(0, len(calls), 1000):
            replies = await self._pipeline(calls[start : start + 1000])
            total += sum(1 for r in replies if r == 1)
        return total

    async def delete_dead(self, channel: str, ids: Sequence[str] | None) -> int:
        k = self._q(channel).keys
        chosen = await self._failed_ids(k, ids)
        if not chosen:
            return 0
        scores = await self._redis.call_many(("ZSCORE", k.failed, job_id) for job_id in chosen)
        present = [j for j, s in zip(chosen, scores, strict=True) if s is not None]
        calls = [(scripts.REMOVE_JOB, [k.job(j), k.repeat], [j, 0, k.base]) for j in present]
        replies = await self._pipeline(calls)
        return sum(1 for r in replies if r == 1)

    async def purge(self, channel: str) -> None:
        """Delete every key of the queue (its jobs in every state, counters and events)."""
        base = self._q(channel).keys.base
        batch: list[Any] = []
        async for key in self._redis.scan(_glob_escape(base) + "*", 1000):
            batch.append(key)
            if len(batch) >= 1000:
                await self._redis.call("UNLINK", *batch)
                batch = []
        if batch:
            await self._redis.call("UNLINK", *batch)
        self._held = {key: v for key, v in self._held.items() if key[0] != channel}

    async def channels(self) -> list[str]:
        found: set[str] = set()
        head = self.prefix + ":"
        async for key in self._redis.scan(_glob_escape(head) + "*:meta", 1000):
            text = _text(key)
            name = text[len(head) : -len(":meta")]
            if ":" not in name:
                found.add(name)
        return sorted(found)

    async def close(self) -> None:
        await self._redis.close()
        await asyncio.sleep(0)  # let the transports finish closing


def _encode_opts(opts: Mapping[str, Any]) -> dict[str, Any]:
    """Job options as BullMQ stores them (Node's optsAsJSON): short keys, telemetry flattened."""
    encoded: dict[str, Any] = {}
    for key, value in opts.items():
        if key == "telemetry" and isinstance(value, Mapping):
            if value.get("metadata") is not None:
                encoded["tm"] = value["metadata"]
            if value.get("omitContext") is not None:
                encoded["omc"] = value["omitContext"]
        else:
            encoded[OPTS_ENCODE.get(key, key)] = value
    return encoded


def _headers(metadata: Any) -> bytes | None:
    """Our headers from BullMQ's telemetry metadata, when it is a JSON object of strings (as
    bullmq-otel writes its trace carrier); anything else is not ours to interpret."""
    if not isinstance(metadata, str) or not metadata.startswith("{"):
        return None
    try:
        carrier = json.loads(metadata)
    except ValueError:
        return None
    if not isinstance(carrier, dict) or not all(isinstance(v, str) for v in carrier.values()):
        return None
    return metadata.encode()


def _held_from(opts: Mapping[str, Any], atm: Any) -> _Held:
    attempts = opts.get("attempts")
    return _Held(
        attempts=int(attempts) if isinstance(attempts, int | float) and attempts > 0 else None,
        attempts_made=int(atm or 0),
        backoff=opts.get("backoff"),
        remove_on_complete=opts.get("removeOnComplete"),
        remove_on_fail=opts.get("removeOnFail"),
        lifo=bool(opts.get("lifo")),
    )


def _backoff_ms(backoff: Any, attempts_made: int) -> int:
    """BullMQ's built-in strategies (Backoffs.calculate); a custom type falls back to fixed."""
    if isinstance(backoff, int | float):
        backoff = {"type": "fixed", "delay": backoff}
    if not isinstance(backoff, Mapping):
        return 0
    delay = float(backoff.get("delay") or 0)
    jitter = float(backoff.get("jitter") or 0)
    if backoff.get("type") == "exponential":
        delay = round(2 ** (attempts_made - 1) * delay)
    if jitter > 0:
        return int(random.random() * delay * jitter + delay * (1 - jitter))
    return int(delay)


def _min_hint(hint: int, value: int) -> int:
    return value if hint < 0 else min(hint, value)


def _hash_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes when it is not the whole key: between the first
    ``{`` and the next ``}``, if not empty."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    return key[start + 1 : end] if end > start + 1 else ""


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
