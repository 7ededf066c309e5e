"""The load test's verdict: the invariants every run must keep, and the performance targets."""

from __future__ import annotations

from .result import RunResult
from .setup import Check, first_int

__all__ = ["checks"]


def _events_sum(r: RunResult, *keys: str) -> int | None:
    """A figure of the event (or the sum over the events), None when an event does not give it."""
    answers = list(r.events.values()) or [r.event]
    values = [first_int(answer, *keys) for answer in answers]
    return None if None in values else sum(v for v in values if v is not None)


def checks(r: RunResult) -> list[Check]:
    s = r.scenario
    checks: list[Check] = []
    expected_reserved = r.expected_reserved
    checks.append(
        Check(
            "every POST answered with its outcome (201/409)"
            if r.final_on_answer
            else "every POST accepted (2xx)",
            r.errors == 0,
            f"{r.accepted:,} of {s.requests:,} accepted; {r.errors:,} failed",
        )
    )
    checks.append(
        Check(
            "every request final, none lost",
            r.all_final_s is not None
            and r.outcomes.pending == 0
            and r.outcomes.final == r.expected_final
            and r.outcomes.accepted in (None, r.expected_final),
            f"{r.outcomes.final:,} final of {r.expected_final:,} accepted "
            f"(service counted {r.outcomes.accepted}), {r.outcomes.pending:,} pending",
        )
    )
    event_reserved = _events_sum(r, "reservedTickets", "reserved")
    event_remaining = _events_sum(r, "remainingTickets", "remaining")
    checks.append(
        Check(
            f"exactly {expected_reserved:,} reserved",
            r.outcomes.reserved == expected_reserved
            and len(r.reserved_user_ids) == expected_reserved
            and event_reserved in (None, expected_reserved),
            f"outcomes {r.outcomes.reserved:,}, list {len(r.reserved_user_ids):,}, "
            f"event {event_reserved}",
        )
    )
    if event_remaining is not None:
        want = s.tickets * max(len(r.event_ids), 1) - expected_reserved
        checks.append(
            Check(f"event remaining = {want:,}", event_remaining == want, f"{event_remaining:,}")
        )
    over = r.oversold
    checks.append(Check("no event over its capacity", over == 0, f"{over:,} reservations past it"))
    dupes = r.double_booked
    checks.append(Check("no user reserved twice", dupes == 0, f"{dupes} duplicates"))
    ours = set(r.user_ids)
    strangers = sum(1 for u in r.reserved_user_ids if u not in ours)
    checks.append(Check("reserved users are the test's", strangers == 0, f"{strangers} others"))
    if s.repeats == 0:
        sold_out = r.outcomes.rejected
        want = r.expected_final - expected_reserved
        checks.append(
            Check(
                f"{want:,} rejected (sold out)",
                sold_out == want,
                f"{sold_out:,} rejected: {r.outcomes.reasons or '-'}",
            )
        )
    sampled = sum(r.sampled_jobs.values())
    bad = {k: v for k, v in r.sampled_jobs.items() if k not in ("RESERVED", "REJECTED")}
    checks.append(
        Check(
            f"sampled requests final ({sampled:,})",
            not bad,
            ", ".join(f"{k} {v:,}" for k, v in sorted(r.sampled_jobs.items())) or "-",
        )
    )
    post = r.post_percentiles_ms()
    if s.post_p95_max_ms is not None:
        checks.append(
            Check(
                f"POST p95 < {s.post_p95_max_ms:,.0f} ms",
                post["p95"] < s.post_p95_max_ms,
                f"{post['p95']:,.1f} ms",
            )
        )
    if s.target_accepted_rps is not None:
        checks.append(
            Check(
                f"accepted >= {s.target_accepted_rps:,.0f} req/s",
                r.accepted_rps >= s.target_accepted_rps,
                f"{r.accepted_rps:,.0f} req/s",
                target=True,
            )
        )
    if s.target_post_p99_ms is not None:
        checks.append(
            Check(
                f"POST p99 < {s.target_post_p99_ms:,.0f} ms",
                post["p99"] < s.target_post_p99_ms,
                f"{post['p99']:,.1f} ms",
                target=True,
            )
        )
    if s.target_final_after_last_s is not None:
        after = r.final_after_last_s
        checks.append(
            Check(
                f"all final within {s.target_final_after_last_s:g} s of the last request",
                after is not None and after <= s.target_final_after_last_s,
                "never" if after is None else f"{after:.2f} s",
                target=True,
            )
        )
    return checks
