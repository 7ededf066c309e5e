"""The settle side, run by the workers: a batch of queued requests written to PostgreSQL
(``batch.py``), and the maintenance pass that recovers requests never queued and keeps the gate
in line with PostgreSQL (``recovery.py``, ``reconcile.py``)."""
