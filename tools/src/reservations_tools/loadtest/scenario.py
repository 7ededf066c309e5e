"""Load-test scenarios: what is sent, and which bars a run must clear."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["SCENARIOS", "Scenario", "scenario"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One run: ``requests`` reservation POSTs for an event with ``tickets`` tickets.

    ``repeat_fraction`` of the requests come a second time from a user who already sent one, so
    ``requests * (1 - repeat_fraction)`` distinct users are created. ``connections`` is the number
    of keep-alive connections (each one request at a time: a closed loop). With ``events`` above 1
    the requests are spread over that many events of ``tickets`` tickets each: the k-th user's
    requests all go to event k mod ``events``.

    The bars: correctness invariants always fail the run; ``post_p95_max_ms`` (the seed's k6
    threshold) also does; the throughput targets fail it only with ``strict``.

    With ``hold_seconds`` the event is sold with holds and a waitlist, and the run follows each
    request as its client would (``holds.py``): a winner holds its seat ``hold_seconds``, and
    confirms it after a think time drawn from 0 to ``think_max_s`` (default: half the hold),
    unless it is among the ``never_confirm`` share of holders; requests that find the event sold
    out wait in line for the seats that come back. ``final_timeout_s`` then bounds the whole
    run after the sending.
    """

    name: str
    requests: int
    tickets: int
    repeat_fraction: float = 0.0
    connections: int = 64
    post_p95_max_ms: float | None = None
    target_accepted_rps: float | None = None
    target_post_p99_ms: float | None = None
    target_final_after_last_s: float | None = None
    final_timeout_s: float = 120.0
    events: int = 1
    hold_seconds: int | None = None
    never_confirm: float = 0.3
    think_max_s: float | None = None
    target_expiry_to_seat_p99_s: float | None = None

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ValueError("requests must be at least 1")
        if self.tickets < 1:
            raise ValueError("tickets must be at least 1")
        if not 0.0 <= self.repeat_fraction < 1.0:
            raise ValueError("repeat_fraction must be in [0, 1)")
        if self.connections < 1:
            raise ValueError("connections must be at least 1")
        if self.events < 1:
            raise ValueError("events must be at least 1")
        if self.hold_seconds is not None:
            if not 1 <= self.hold_seconds <= 86_400:
                raise ValueError("hold_seconds must be in [1, 86400]")
            if self.repeat_fraction or self.events != 1:
                raise ValueError("a holds run sends one request per user to one event")
        if not 0.0 <= self.never_confirm <= 1.0:
            raise ValueError("never_confirm must be in [0, 1]")
        if self.think_max_s is not None and self.think_max_s < 0:
            raise ValueError("think_max_s must not be negative")

    @property
    def holds(self) -> bool:
        """The event is sold with holds and a waitlist (see ``holds.py``)."""
        return self.hold_seconds is not None

    @property
    def think_s(self) -> float:
        """The longest think time of a holder that confirms."""
        if self.think_max_s is not None:
            return self.think_max_s
        return (self.hold_seconds or 0) / 2

    @property
    def repeats(self) -> int:
        return round(self.requests * self.repeat_fraction)

    @property
    def users(self) -> int:
        return self.requests - self.repeats

    def with_overrides(self, **changes: object) -> Scenario:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


SCENARIOS: dict[str, Scenario] = {
    # The seed's k6 bar: 10,000 users, one POST each, 100 tickets, p95 under 2 s.
    "seed": Scenario(
        name="seed",
        requests=10_000,
        tickets=100,
        connections=500,
        post_p95_max_ms=2_000.0,
    ),
    # 100,000 requests for 1,000 tickets, a tenth of them repeats from the same users.
    "burst": Scenario(
        name="burst",
        requests=100_000,
        tickets=1_000,
        repeat_fraction=0.1,
        connections=64,
        target_accepted_rps=5_000.0,
        target_post_p99_ms=50.0,
        target_final_after_last_s=5.0,
    ),
    # 100,000 users for 1,000 seats held 10 s each: 30% of the holders never confirm, the others
    # confirm within 5 s; the sold-out requests wait in line for the seats that come back.
    "holds": Scenario(
        name="holds",
        requests=100_000,
        tickets=1_000,
        connections=64,
        final_timeout_s=300.0,
        hold_seconds=10,
        never_confirm=0.3,
        target_expiry_to_seat_p99_s=1.0,
    ),
}


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
