"""What ``reservations.server.GuardedHttpProtocol`` adds to a request, in CPU time.

    uv run python -m bench.http_guard [--requests 20000] [--rounds 5]

Both protocols, uvicorn's ``HttpToolsProtocol`` and the guarded one wrapping it, serve a real
connection (a socket pair) on uvloop with a trivial ASGI app. The reservation POST the load test
sends arrives again and again on that keep-alive connection; each ``data_received`` call is timed
(the app's task runs between calls, untimed), and the medians per call are compared. The
difference is what the guard costs a request: its own httptools parse of the head, the phase
bookkeeping and, on the first request only, one timer.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from reservations.server import GuardedHttpProtocol, HttpLimits

REQUEST = (
    b"POST /reservation/1/123456 HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8080\r\n"
    b"Accept: */*\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\n"
    b"User-Agent: reservations-loadtest\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


class Guarded(GuardedHttpProtocol):
    limits = HttpLimits(
        max_head_bytes=16 * 1024, head_timeout_s=10, body_timeout_s=30, max_connections=2048
    )


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 202, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def per_call_ns(protocol_class: type[Any], requests: int) -> list[int]:
    loop = asyncio.get_running_loop()
    config = Config(app=app, lifespan="off", log_level="warning", proxy_headers=False)
    config.load()
    state = ServerState()
    server_side, client_side = socket.socketpair()
    client_side.setblocking(False)
    # The client reads and drops the responses, so the server's writes never back up.
    loop.add_reader(client_side.fileno(), lambda: client_side.recv(1 << 20))
    transport, protocol = await loop.connect_accepted_socket(
        lambda: protocol_class(config=config, server_state=state, app_state={}), server_side
    )
    timings = []
    try:
        for _ in range(requests):
            start = time.perf_counter_ns()
            protocol.data_received(REQUEST)
            timings.append(time.perf_counter_ns() - start)
            # Let the app's task answer before the next request (untimed).
            await asyncio.gather(*state.tasks)
    finally:
        loop.remove_reader(client_side.fileno())
        transport.close()
        client_side.close()
    return timings


async def main(requests: int, rounds: int) -> None:
    medians: dict[str, list[float]] = {"httptools": [], "guarded": []}
    for _ in range(rounds):
        # Alternating, so that a busy moment of the (shared) machine hits both alike.
        for name, cls in (("httptools", HttpToolsProtocol), ("guarded", Guarded)):
            timings = await per_call_ns(cls, requests)
            medians[name].append(statistics.median(timings[100:]) / 1000)
    plain = statistics.median(medians["httptools"])
    guarded = statistics.median(medians["guarded"])
    print(f"data_received per request, median of {rounds} rounds of {requests:,}:")
    print(
        f"  uvicorn HttpToolsProtocol   {plain:6.2f} us   (rounds: {_list(medians['httptools'])})"
    )
    print(
        f"  GuardedHttpProtocol         {guarded:6.2f} us   (rounds: {_list(medians['guarded'])})"
    )
    print(f"  added by the guard          {guarded - plain:6.2f} us per request")


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    uvloop.run(main(args.requests, args.rounds))
