"""Queue benchmark: brokerq against Node BullMQ, the PyPI bullmq port, arq and SAQ.

    scripts/bench                       # full run: 50,000 messages, 3 alternating runs
    scripts/bench --quick               # smoke run: 5,000 messages, 1 run, short latency window
    scripts/bench --systems node,brokerq-alo --workloads c --runs 5
    scripts/bench --systems brokerq-alo@50,brokerq-alo@200 --workloads c   # consumer concurrency
    scripts/bench --systems brokerq-alo,brokerq-alo-ack --workloads a,b,d   # replicas_ack cost

One dedicated redis-server for the whole run; FLUSHALL before every workload run; each
system's workload runs in its own subprocess; systems alternate run by run (for each run, for
each workload: A B C D ...). Prints medians and ratios to Node BullMQ; writes every figure to
bench/results/<timestamp>.json (and the Markdown table to bench/results/<timestamp>.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.common import parse_result
from bench.redis_server import RedisProbe, redis_server
from bench.systems import (
    BASELINE,
    DEFAULT_SYSTEMS,
    NEEDS_REPLICA,
    ROOT,
    SYSTEMS,
    System,
    child_env,
    prepare,
    resolve,
)

WORKLOAD_ALIASES = {"a": "produce", "b": "produce_batch", "c": "consume", "d": "latency"}
ALL_WORKLOADS = ["produce", "produce_batch", "consume", "latency"]
RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, help="messages per produce/consume workload (50000)")
    p.add_argument("--runs", type=int, help="alternating runs; medians are reported (3)")
    p.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help=f"comma list of {', '.join(SYSTEMS)}; key@P sets consumer concurrency "
        f"({', '.join(sorted(NEEDS_REPLICA))}: the run's Redis gets a replica)",
    )
    p.add_argument(
        "--workloads",
        default="a,b,c,d",
        help="comma list of a/produce, b/produce_batch, c/consume, d/latency",
    )
    p.add_argument("--concurrency", type=int, default=100, help="concurrent producers for (a)")
    p.add_argument("--batch", type=int, default=1000, help="batch size for (b)")
    p.add_argument("--parallel", type=int, help="consumer concurrency for every system")
    p.add_argument("--rate", type=float, default=5000.0, help="offered rate for (d), msg/s")
    p.add_argument("--duration", type=float, help="measured seconds of (d) (10)")
    p.add_argument("--warmup", type=float, help="warm-up seconds of (d) (2)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before a run is killed")
    p.add_argument("--quick", action="store_true", help="smoke run: n=5000, 1 run, (d) 2+1 s")
    p.add_argument("--verbose", action="store_true", help="show the runners' stderr")
    p.add_argument("--report", metavar="JSON", help="only print the tables of a results file")
    args = p.parse_args(argv)
    quick = args.quick
    args.n = args.n or (5000 if quick else 50_000)
    args.runs = args.runs or (1 if quick else 3)
    args.duration = args.duration or (2.0 if quick else 10.0)
    args.warmup = args.warmup or (1.0 if quick else 2.0)
    args.workload_list = [WORKLOAD_ALIASES.get(w, w) for w in args.workloads.split(",") if w]
    for w in args.workload_list:
        if w not in ALL_WORKLOADS:
            p.error(f"unknown workload {w!r}")
    return args


def run_one(system: System, workload: str, url: str, args: argparse.Namespace, log: Path) -> dict:
    cmd = [
        *system.command(),
        "--url",
        url,
        "--workload",
        workload,
        "--n",
        str(args.n),
        "--concurrency",
        str(args.concurrency),
        "--batch",
        str(args.batch),
        "--parallel",
        str(args.parallel or system.parallel),
        "--rate",
        str(args.rate),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--timeout",
        str(args.timeout),
    ]
    if system.variant:
        cmd += ["--variant", system.variant]
    limit = args.timeout + args.warmup + args.duration + 60
    with log.open("ab") as err:
        err.write(f"\n=== {system.key} {workload}: {' '.join(cmd)}\n".encode())
        err.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=None if args.verbose else err,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"error": f"killed after {limit:.0f}s"}
        except BaseException:  # interrupted: take the runner (and its producer) down too
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}, see {log.relative_to(ROOT)}"}
    try:
        return {"result": parse_result(text)}
    except (RuntimeError, ValueError) as e:
        return {"error": str(e)}


def describe(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    r = result["result"]
    if r.get("unsupported"):
        return f"n/a ({r['unsupported']})"
    if r["workload"] == "latency":
        return (
            f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
            f"({r['received']}/{r['sent']} received, offered {r['offered_rate']:.0f}/s, "
            f"consumed {r.get('consumed_rate') or 0:.0f}/s)"
        )
    return f"{r['value']:,.0f} msg/s"


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds: the runner is killed, the redis-server stopped


def rerender(path: str) -> int:
    data = json.loads(Path(path).read_text())
    meta, results = data["meta"], data["runs"]
    pairs = [(s["key"], s["label"]) for s in meta["systems"]]
    rows = report.summary(results, pairs, BASELINE)
    report.print_table(rows, f"{path} ({meta['command']})", meta["workloads"])
    print(report.markdown_report(rows, results, pairs, meta["workloads"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        return rerender(args.report)
    signal.signal(signal.SIGTERM, _terminate)
    systems: list[System] = []
    for spec in [s for s in args.systems.split(",") if s]:
        system = resolve(spec)
        reason = prepare(system)
        if reason:
            print(f"bench: skipping {system.key}: {reason}", file=sys.stderr)
        else:
            systems.append(system)
    if not systems:
        print("bench: nothing to run", file=sys.stderr)
        return 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    log = RESULTS / f"{stamp}.log"
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    load_before = os.getloadavg()
    print(
        f"bench: {len(systems)} systems x {len(args.workload_list)} workloads x {args.runs} runs,"
        f" n={args.n}; runner logs in {log.relative_to(ROOT)}",
        file=sys.stderr,
    )
    pairs = [(s.key, s.label) for s in systems]
    out = RESULTS / f"{stamp}.json"
    meta: dict[str, Any] = {
        "stamp": stamp,
        "command": "scripts/bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": {k: v for k, v in vars(args).items() if k != "workload_list"},
        "workloads": args.workload_list,
        "systems": [vars(s) for s in systems],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
    }

    def save(complete: bool) -> list[dict[str, Any]]:
        """Written after every run, so an interrupted benchmark keeps what it measured."""
        rows = report.summary(results, pairs, BASELINE)
        meta.update(
            complete=complete,
            loadavg_after=os.getloadavg(),
            elapsed_s=round(time.monotonic() - started, 1),
        )
        out.write_text(json.dumps({"meta": meta, "summary": rows, "runs": results}, indent=1))
        md = report.markdown_report(rows, results, pairs, args.workload_list)
        (RESULTS / f"{stamp}.md").write_text(md)
        return rows

    complete = False
    try:
        replica = any(s.key in NEEDS_REPLICA for s in systems)
        meta["replica"] = replica
        with redis_server(replica=replica) as url:
            probe = RedisProbe(url)
            meta["redis_version"] = probe.snapshot()["version"]
            for run in range(1, args.runs + 1):
                for workload in args.workload_list:
                    for system in systems:
                        probe.reset()
                        time.sleep(0.2)
                        before = probe.snapshot()
                        outcome = run_one(system, workload, url, args, log)
                        outcome.update(probe.delta(before))
                        outcome.update(run=run, system=system.key, workload=workload)
                        outcome["loadavg_1m"] = os.getloadavg()[0]
                        results.append(outcome)
                        print(
                            f"  run {run}/{args.runs}  {workload:<13} {system.key:<18} "
                            f"{describe(outcome)}",
                            file=sys.stderr,
                            flush=True,
                        )
                        save(complete=False)
            probe.reset()
            probe.close()
        complete = True
    finally:
        rows = save(complete)
        title = (
            f"Queue benchmark: n={args.n}, medians of {args.runs} alternating runs"
            f"{'' if complete else ' (INTERRUPTED)'}, (d) at {args.rate:.0f} msg/s; "
            "'vs Node' = times better than Node BullMQ"
        )
        report.print_table(rows, title, args.workload_list)
        print(f"bench: results in {out.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
