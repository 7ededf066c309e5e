"""Reservations: from a POST to a final outcome, one file or folder per step.

1. ``router.py``: the HTTP door (``POST /reservation/{eventId}/{userId}``, the status URL, lists,
   cancelling). The hot POST may also come in through the fast lane
   (``reservations.middleware.fast_lane``), which calls the same function.
2. ``accept.py``: the request gets its place at the admission gate (``gate/``, one Redis Lua call:
   a per-event arrival number and a verdict in arrival order: ADMITTED while seats are left, else
   SOLD_OUT; DUPLICATE when the user already holds one), is queued on ``reservation-queue``
   (``reservations.channels``) carrying that verdict, and the client gets ``202`` with the job id.
3. ``settle/``: a worker writes the outcome in PostgreSQL, which has the last word
   (``settle/batch.py``, SQL in ``repository.py``, tables in ``models.py``): the outcome row keyed
   by the job id is the idempotency key, the events are locked, the ticket counter moves with a
   conditional update in the same transaction as the reservation rows, a CHECK bounds it and a
   partial unique index allows one live reservation per user and event. The workers' maintenance
   pass (``settle/recovery.py``, ``settle/reconcile.py``) recovers requests that were admitted and
   never queued and keeps the gate in line with PostgreSQL. A request that fails on every attempt
   ends FAILED, and its seat goes back (``settle/failed.py``).
4. ``service.py``: reading outcomes and reservations, and cancelling: the reservation becomes
   CANCELLED and its ticket returns in one transaction, with the gate's release in an outbox.
"""
