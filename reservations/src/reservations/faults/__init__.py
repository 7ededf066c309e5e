"""Fault injection: a real deployment, a burst of reservations, something breaks, and then the
invariants are checked (``python -m reservations.faults``; results in docs/reliability.md)."""
