"""Idempotency keys in PostgreSQL: the table (``models.py``), its SQL (``store.py``) and the
header's place in the OpenAPI document (``openapi.py``). The HTTP side, which reads the header
and replays answers, is ``reservations.middleware.idempotency``; the workers' maintenance pass
deletes keys past their 24 h (``store.delete_expired``)."""
