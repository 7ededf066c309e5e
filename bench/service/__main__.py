"""Service benchmark: our reservation service against the seed's NestJS + BullMQ design and a
queue-less FastAPI + asyncpg design, on the same PostgreSQL and Redis, in the same run.

    scripts/bench-service                       # seed, hot, spread; 3 alternating runs
    scripts/bench-service --quick               # smoke run: small sizes, 1 run (a few minutes)
    scripts/bench-service --scenarios hot --runs 5
    scripts/bench-service --systems seed,ours,queueless@2
    scripts/bench-service --report bench/results/service-<stamp>.json   # tables again

One PostgreSQL server (fsync on) and one Redis server (append-only, everysec: as
`reservations-tools up` runs them) for the whole benchmark; before every run a fresh database
and FLUSHALL. For each run, for each scenario, the systems one after the other (A B C, A B C,
...): start the system's processes, drive it with the load test's runner over HTTP, meter the
CPU of every process group from the first POST to the last outcome, check the results, stop it.
Prints medians and ratios to the seed's design; writes
bench/results/service-<stamp>.{json,md,png,log}.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import redis
import uvloop
from rich.console import Console

from bench.service import procstat, report
from bench.service.systems import (
    BASELINE,
    ROOT,
    SYSTEMS,
    StartError,
    System,
    http_get,
    resolve,
    tail,
)
from brokerq.server import RedisServer
from reservations_tools.loadtest import LoadTestError, Progress, Scenario, run_loadtest
from reservations_tools.servers.postgres import PostgresServer

RESULTS = ROOT / "bench" / "results"

SCENARIOS: dict[str, Scenario] = {
    # The seed's k6 scenario: 10,000 users, one POST each, 100 tickets, p95 under 2 s.
    "seed": Scenario(
        name="seed", requests=10_000, tickets=100, connections=500, post_p95_max_ms=2_000.0,
        final_timeout_s=900.0,
    ),
    # Every request for one event: 100,000 requests (10% repeats) for 1,000 tickets.
    "hot": Scenario(
        name="hot", requests=100_000, tickets=1_000, repeat_fraction=0.1, connections=64,
        final_timeout_s=3_600.0,
    ),
    # The same spread over 1,000 events of 50 tickets (90 users each).
    "spread": Scenario(
        name="spread", requests=100_000, tickets=50, events=1_000, repeat_fraction=0.1,
        connections=64, final_timeout_s=3_600.0,
    ),
}  # fmt: skip
QUICK: dict[str, dict[str, Any]] = {
    "seed": {"requests": 1_000, "tickets": 10, "connections": 100},
    "hot": {"requests": 3_000, "tickets": 100},
    "spread": {"requests": 3_000, "events": 30},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench-service",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--runs", type=int, help="alternating runs; medians are reported (3)")
    p.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma list of {', '.join(SYSTEMS)} (queueless@N: N uvicorn processes)",
    )
    p.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma list of seed, hot, spread"
    )
    p.add_argument("--requests", type=int, help="override every scenario's number of POSTs")
    p.add_argument("--connections", type=int, help="override every scenario's connections")
    p.add_argument("--quick", action="store_true", help="smoke run: small scenarios, 1 run")
    p.add_argument(
        "--seed-query-log",
        choices=("on", "off"),
        default="on",
        help="the seed's consumers log every query, as its code does (on); off drops that",
    )
    p.add_argument(
        "--results", type=Path, default=RESULTS, help="where the results files go (bench/results)"
    )
    p.add_argument("--report", metavar="JSON", help="only print the tables of a results file")
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    chosen = []
    for name in [s for s in args.scenarios.split(",") if s]:
        if name not in SCENARIOS:
            raise SystemExit(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
        sc = SCENARIOS[name]
        if args.quick:
            sc = sc.with_overrides(**QUICK[name])
        chosen.append(sc.with_overrides(requests=args.requests, connections=args.connections))
    return chosen


def describe(sc: Scenario) -> dict[str, Any]:
    return {**asdict(sc), "users": sc.users, "capacity": sc.tickets * sc.events}


# -- the shared servers ---------------------------------------------------------------------------


class Servers:
    """One PostgreSQL and one Redis for every system; a fresh database and FLUSHALL per run."""

    def __init__(self, pg: PostgresServer, rs: RedisServer) -> None:
        self.pg = pg
        self.rs = rs
        self.redis = redis.Redis.from_url(rs.url)
        # The append-only file is rewritten between runs, never during one: a rewrite's fork
        # would land on whichever system happened to be running.
        self.redis.config_set("auto-aof-rewrite-percentage", 0)

    @property
    def redis_pid(self) -> int:
        assert self.rs.process is not None
        return self.rs.process.pid

    @property
    def postgres_pid(self) -> int:
        return int((self.pg.data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])

    def reset_redis(self) -> None:
        self.redis.flushall()
        self.redis.bgrewriteaof()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = self.redis.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                break
            time.sleep(0.05)
        self.redis.config_resetstat()

    def database_url(self, name: str) -> str:
        return self.pg.dsn.rsplit("/", 1)[0] + f"/{name}"

    def create_database(self, name: str, schema: Path | None) -> str:
        ddl = schema.read_text() if schema is not None else None

        async def create() -> None:
            conn = await asyncpg.connect(self.pg.dsn)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()
            if ddl is not None:
                conn = await asyncpg.connect(self.database_url(name))
                try:
                    await conn.execute(ddl)
                finally:
                    await conn.close()

        asyncio.run(create())
        # A checkpoint now, so that the last run's writes are not flushed during this one.
        asyncio.run(self._sql("CHECKPOINT"))
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        asyncio.run(self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def postgres_version(self) -> str:
        async def version() -> str:
            conn = await asyncpg.connect(self.pg.dsn)
            try:
                return str(await conn.fetchval("SHOW server_version"))
            finally:
                await conn.close()

        return asyncio.run(version())

    async def _sql(self, statement: str) -> None:
        conn = await asyncpg.connect(self.pg.dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    def close(self) -> None:
        self.redis.close()


@contextmanager
def servers() -> Iterator[Servers]:
    pg_dir = Path(tempfile.mkdtemp(prefix="bench-service-pg-"))
    redis_dir = Path(tempfile.mkdtemp(prefix="bench-service-redis-"))
    pg = PostgresServer(pg_dir)
    rs = RedisServer(redis_dir, appendonly=True, appendfsync="everysec")
    try:
        pg.start()
        rs.start_sync()
        shared = Servers(pg, rs)
        try:
            yield shared
        finally:
            shared.close()
    finally:
        rs.stop_sync()
        pg.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(redis_dir, ignore_errors=True)


# -- one run --------------------------------------------------------------------------------------


class Meter(Progress):
    """The runner's progress, printed in one line per phase, and the CPU of every process group
    between the first POST and the last outcome."""

    def __init__(self, groups: dict[str, list[int]], label: str) -> None:
        self.groups = groups
        self.label = label
        self.cpu: dict[str, dict[str, float]] = {}
        self.at: dict[str, float] = {}

    def phase(self, name: str, total: int | None) -> None:
        count = f" ({total:,})" if total else ""
        print(f"    {self.label}: {name}{count}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        print(f"    {self.label}: {text}", file=sys.stderr, flush=True)

    def measure(self, point: str) -> None:
        cpu = procstat.group_cpu(self.groups)
        cpu["driver"] = procstat.self_cpu()
        self.cpu[point] = cpu
        self.at[point] = time.perf_counter()

    def used(self) -> tuple[dict[str, float], float]:
        if "start" not in self.cpu or "end" not in self.cpu:
            return {}, 0.0
        start, end = self.cpu["start"], self.cpu["end"]
        return {k: end[k] - start.get(k, 0.0) for k in end}, self.at["end"] - self.at["start"]


def _queue_state(port: int) -> dict[str, Any] | None:
    """BullMQ's job counts after the run (the seed's design): nothing should be left."""
    status, body = http_get(port, "/bench/queue")
    return json.loads(body) if status == 200 else None


def run_one(
    system: System,
    sc: Scenario,
    run: int,
    shared: Servers,
    token: str,
    log: Path,
) -> dict[str, Any]:
    record: dict[str, Any] = {"system": system.key, "scenario": sc.name, "run": run}
    db = re.sub(r"[^a-z0-9_]", "_", f"bench_{system.key}_{sc.name}_{run}")
    logs = Path(tempfile.mkdtemp(prefix=f"bench-service-{system.key}-"))
    running = None
    failed = True
    try:
        shared.reset_redis()
        database_url = shared.create_database(db, system.schema)
        running = system.start(database_url, shared.rs.url, shared.rs.port, logs, token)
        groups = {**running.groups, "redis": [shared.redis_pid], "postgres": [shared.postgres_pid]}
        meter = Meter(groups, system.key)
        result = uvloop.run(
            run_loadtest(
                running.base_url, sc, meter, seed=run, admin_token=token,
                final_on_answer=system.final_on_answer, job_sample=system.job_sample,
            )
        )  # fmt: skip
        cpu, window = meter.used()
        queue = _queue_state(running.port) if system.key == "seed" else None
        record["figures"] = report.figures(result, cpu, window, queue)
        failed = False
    except (StartError, LoadTestError, OSError, asyncpg.PostgresError) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if running is not None:
            running.stop()
        try:
            shared.drop_database(db)
        except (OSError, asyncpg.PostgresError) as exc:
            print(f"bench-service: could not drop {db}: {exc}", file=sys.stderr)
        if failed:
            with log.open("a") as out:
                out.write(f"\n=== {system.key} {sc.name} run {run}: {record.get('error')}\n")
                for path in sorted(logs.rglob("*.log")):
                    out.write(f"--- {path.name}\n{tail(path, 60)}\n")
        shutil.rmtree(logs, ignore_errors=True)
    record["loadavg_1m"] = os.getloadavg()[0]
    return record


def describe_run(record: dict[str, Any]) -> str:
    if "error" in record:
        return f"ERROR {record['error'][:300]}"
    f = record["figures"]
    final = f["first_to_all_final_s"]
    verdict = "ok" if f["ok"] else "FAILED: " + "; ".join(f["failed_checks"])[:300]
    return (
        f"{f['accepted_rps']:,.0f} req/s accepted, POST p99 {f['post_ms']['p99'] or 0:,.1f} ms, "
        f"all final {'never' if final is None else f'{final:,.2f} s'} after the first POST; "
        f"{f['reserved']:,} reserved of {f['capacity']:,}, oversold {f['oversold']:,}, "
        f"double-booked {f['double_booked']:,}, lost {f['lost']:,}, "
        f"service CPU {f['cpu_us_per_request'].get('service', 0):,.0f} µs/request [{verdict}]"
    )


# -- the whole benchmark --------------------------------------------------------------------------


def rerender(path: str) -> int:
    data = json.loads(Path(path).read_text())
    meta = data["meta"]
    systems = [(key, label, front, back) for key, label, front, back in meta["systems"]]
    tables = report.summaries(data["runs"], systems, meta["scenarios"], BASELINE)
    report.print_tables(tables, _console())
    return 0


def _console(stderr: bool = False) -> Console:
    """Wide enough for three systems' columns when the output is a file or a pipe."""
    console = Console(stderr=stderr, soft_wrap=True)
    return console if console.is_terminal else Console(stderr=stderr, soft_wrap=True, width=170)


def _commit() -> str | None:
    """The checked-out commit (with '+' when the tree has changes), for the figures' record."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds: the system under test is stopped, the servers too


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        return rerender(args.report)
    signal.signal(signal.SIGTERM, _terminate)
    if args.seed_query_log == "off":
        os.environ["SEED_QUERY_LOG"] = "off"
    chosen = scenarios(args)
    systems: list[System] = []
    for spec in [s for s in args.systems.split(",") if s]:
        system = resolve(spec)
        reason = system.prepare()
        if reason:
            print(f"bench-service: skipping {system.key}: {reason}", file=sys.stderr)
        else:
            systems.append(system)
    if not systems:
        print("bench-service: nothing to run", file=sys.stderr)
        return 1
    # The seed's design is the baseline: its column comes first.
    systems.sort(key=lambda s: s.key != BASELINE)
    results: Path = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = results / f"service-{stamp}"
    log = base.with_suffix(".log")
    load_before = [round(x, 2) for x in os.getloadavg()]
    console = _console(stderr=True)
    console.print(
        f"bench-service: {len(systems)} systems x {len(chosen)} scenarios x {args.runs} runs; "
        f"load average at the start: {load_before}; system logs of failed runs in {_shown(log)}"
    )
    system_rows = [(s.key, s.label, s.front, s.back) for s in systems]
    meta: dict[str, Any] = {
        "stamp": stamp,
        "command": "scripts/bench-service " + " ".join(argv if argv is not None else sys.argv[1:]),
        "runs": args.runs,
        "systems": system_rows,
        "scenarios": [describe(sc) for sc in chosen],
        "seed_query_log": args.seed_query_log,
        "commit": _commit(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
    }
    records: list[dict[str, Any]] = []
    started = time.monotonic()

    def save(complete: bool) -> list[report.Summary]:
        """Written after every run, so an interrupted benchmark keeps what it measured."""
        meta.update(
            complete=complete,
            loadavg_after=[round(x, 2) for x in os.getloadavg()],
            elapsed_s=round(time.monotonic() - started, 1),
        )
        tables = report.summaries(records, system_rows, meta["scenarios"], BASELINE)
        base.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": records}, indent=1))
        base.with_suffix(".md").write_text(report.markdown(tables, meta))
        return tables

    token = secrets.token_urlsafe(24)
    complete = False
    try:
        with servers() as shared:
            meta["postgres_version"] = shared.postgres_version()
            meta["redis_version"] = shared.redis.info("server")["redis_version"]
            for run in range(1, args.runs + 1):
                for sc in chosen:
                    for system in systems:
                        console.print(f"  run {run}/{args.runs}  {sc.name:<7} {system.key}")
                        record = run_one(system, sc, run, shared, token, log)
                        records.append(record)
                        line = f"    -> {describe_run(record)}"
                        console.print(line, markup=False, highlight=False)
                        save(complete=False)
        complete = True
    finally:
        tables = save(complete)
        if records:
            report.plot(records, system_rows, meta["scenarios"], base.with_suffix(".png"))
        out = _console()
        report.print_tables(tables, out)
        out.print(
            f"load average: {meta['loadavg_before']} at the start, {meta['loadavg_after']} at "
            f"the end{'' if complete else ' (INTERRUPTED)'}"
        )
        out.print(f"results: {_shown(base)}.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
