"""The service benchmark: our reservation service against the seed's NestJS + BullMQ design and a
queue-less FastAPI + asyncpg design (``python -m bench.service``, ``scripts/bench-service``)."""
