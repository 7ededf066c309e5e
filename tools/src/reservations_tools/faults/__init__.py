"""Fault injection: a real deployment, a burst of reservations, something breaks, and then the
invariants are checked (``reservations-tools faults``; results in docs/reliability.md)."""
