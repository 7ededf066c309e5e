"""Reservations: from a POST to a final outcome.

1. The API asks the admission gate (``admission.py``, one Redis Lua call) for the request's place:
   a per-event arrival number, and a verdict decided in arrival order: ADMITTED while admitted
   users are fewer than the tickets, else SOLD_OUT; DUPLICATE when the user already holds one.
   The request is then queued on ``reservation-queue`` carrying that verdict, and the client gets
   ``202`` with the job id and where to poll. Unknown users or events get ``404`` here.
2. A worker (``service.process_batch``, for the batches of ``worker.ReservationProcessor``) writes
   the outcome in PostgreSQL, which has the last word: the outcome row keyed by the job id is the
   idempotency key, the events are locked, the ticket counter moves with a conditional update in
   the same transaction as the reservation rows, a CHECK bounds it and a partial unique index
   allows one live reservation per user and event. An admitted request can still be refused there
   (user or event gone); its gate place is then handed back.
3. Cancelling marks the reservation CANCELLED and returns the ticket in one transaction, then
   hands the gate place back so the next arrival can have it.

The gate's state is rebuilt from PostgreSQL whenever it is missing.
"""
